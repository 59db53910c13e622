import pytest

from alpaca_di.errors import ConfigurationError
from alpaca_di.transport import ConnectionOptions, check_url


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backoff_initial", 0),
        ("backoff_max", -1),
        ("ping_interval", 0),
        ("data_timeout", -5),
        ("open_timeout", "10"),
        ("queue_maxsize", 0),
        ("queue_maxsize", 1.5),
        ("overflow", "drop_everything"),
    ],
)
def test_bad_option_names_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "overflow" else "overflow"):
        ConnectionOptions(**{field: value})


def test_backoff_max_below_initial_is_refused():
    with pytest.raises(ValueError, match="backoff_max"):
        ConnectionOptions(backoff_initial=5, backoff_max=1)


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:1/v2/iex",
        "ws://localhost/stream",
        "ws://[::1]:9/x",
        "wss://example.com/v2/sip",
    ],
)
def test_accepted_urls(url):
    check_url(url, allow_insecure=False)


def test_plain_ws_to_remote_host_is_refused_unless_opted_in():
    with pytest.raises(ConfigurationError, match="unencrypted"):
        check_url("ws://stream.example.com/v2/iex", allow_insecure=False)
    check_url("ws://stream.example.com/v2/iex", allow_insecure=True)


@pytest.mark.parametrize("url", ["http://127.0.0.1/v2/iex", "stream.data.alpaca.markets", "wss://"])
def test_malformed_urls_are_refused(url):
    with pytest.raises(ConfigurationError, match="ws://"):
        check_url(url, allow_insecure=False)


def test_credentials_in_url_are_refused():
    with pytest.raises(ConfigurationError, match="credentials"):
        check_url("wss://key:secret@example.com/v2/iex", allow_insecure=False)
