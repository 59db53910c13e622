"""AlpacaSettings, settings_from_mapping and Credentials."""

from __future__ import annotations

import os
import pickle
import traceback
from pathlib import Path

import pytest
from dependency_injector import providers
from pydantic import SecretStr

from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConfigurationError
from alpaca_di.settings import AlpacaSettings, UnknownSettingWarning, settings_from_mapping

KEY = "PKTEST1234ABCD"
SECRET = "sUp3r-s3cret-VALUE-9f8e7d"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer environment or .env file leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith(("APCA_", "ALPACA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)


def _all_text(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *map(str, exc.args), *traceback.format_exception(exc)])


# -- sources ------------------------------------------------------------------------------


@pytest.mark.usefixtures("keys")
def test_defaults_from_environment() -> None:
    s = AlpacaSettings()
    assert s.api_key == KEY
    assert s.secret_key.get_secret_value() == SECRET
    assert s.paper is True
    assert (s.feed, s.crypto_feed, s.option_feed) == ("iex", "us", "indicative")
    assert s.data_stream_url == "wss://stream.data.alpaca.markets"
    assert s.trading_stream_url is None
    assert s.api_url is None
    assert (s.backoff_initial, s.backoff_max, s.connection_limit_grace) == (0.5, 30.0, 90.0)
    assert (s.ping_interval, s.ping_timeout, s.data_timeout) == (10.0, 20.0, None)
    assert (s.open_timeout, s.close_timeout) == (10.0, 1.0)
    assert s.allow_insecure is False
    assert (s.queue_maxsize, s.overflow) == (10_000, "drop_oldest")
    assert (s.sharing, s.redis_url) == ("local", "redis://127.0.0.1:6379/0")


def test_alternate_key_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", KEY)
    monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
    s = AlpacaSettings()
    assert s.api_key == KEY
    assert s.secret_key.get_secret_value() == SECRET


def test_env_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("apca_api_key_id", KEY)
    monkeypatch.setenv("apca_api_secret_key", SECRET)
    monkeypatch.setenv("alpaca_feed", "sip")
    s = AlpacaSettings()
    assert (s.api_key, s.feed) == (KEY, "sip")


@pytest.mark.usefixtures("keys")
def test_alpaca_prefixed_options(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "ALPACA_PAPER": "false",
        "ALPACA_FEED": "SIP",
        "ALPACA_CRYPTO_FEED": "us",
        "ALPACA_OPTION_FEED": "opra",
        "ALPACA_DATA_STREAM_URL": "ws://127.0.0.1:8765/",
        "ALPACA_TRADING_STREAM_URL": "ws://localhost:8766/stream",
        "ALPACA_API_URL": "http://127.0.0.1:8767",
        "ALPACA_DATA_URL": "http://127.0.0.1:8768/",
        "ALPACA_BACKOFF_INITIAL": "0.01",
        "ALPACA_BACKOFF_MAX": "0.05",
        "ALPACA_CONNECTION_LIMIT_GRACE": "0",
        "ALPACA_PING_INTERVAL": "none",
        "ALPACA_PING_TIMEOUT": "None",
        "ALPACA_DATA_TIMEOUT": "5",
        "ALPACA_OPEN_TIMEOUT": "2",
        "ALPACA_CLOSE_TIMEOUT": "0.5",
        "ALPACA_QUEUE_MAXSIZE": "null",
        "ALPACA_OVERFLOW": "conflate",
        "ALPACA_SHARING": "redis",
        "ALPACA_REDIS_URL": "redis://10.0.0.5:6380/2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = AlpacaSettings()
    assert s.paper is False
    assert (s.feed, s.option_feed) == ("sip", "opra")
    assert s.data_stream_url == "ws://127.0.0.1:8765"  # trailing slash dropped
    assert s.resolved_trading_stream_url == "ws://localhost:8766/stream"
    assert s.resolved_api_url == "http://127.0.0.1:8767"
    assert s.resolved_data_url == "http://127.0.0.1:8768"
    assert (s.backoff_initial, s.backoff_max, s.connection_limit_grace) == (0.01, 0.05, 0.0)
    assert (s.ping_interval, s.ping_timeout, s.data_timeout) == (None, None, 5.0)
    assert (s.open_timeout, s.close_timeout) == (2.0, 0.5)
    assert (s.queue_maxsize, s.overflow) == (None, "conflate")
    assert (s.sharing, s.redis_url) == ("redis", "redis://10.0.0.5:6380/2")


def test_dotenv_file_then_env_then_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text(
        f"APCA_API_KEY_ID={KEY}\nAPCA_API_SECRET_KEY={SECRET}\n"
        "ALPACA_FEED=sip\nALPACA_OVERFLOW=drop_newest\nUNRELATED=1\n",
        encoding="utf-8",
    )
    s = AlpacaSettings()
    assert (s.api_key, s.feed, s.overflow) == (KEY, "sip", "drop_newest")
    monkeypatch.setenv("ALPACA_FEED", "delayed_sip")
    assert AlpacaSettings().feed == "delayed_sip"
    assert AlpacaSettings(feed="test").feed == "test"
    assert AlpacaSettings.load(feed="boats").feed == "boats"


def test_arguments_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    s = AlpacaSettings(api_key=KEY, secret_key=SECRET, paper=False, api_url="http://127.0.0.1:1")
    assert s.paper is False
    assert s.credentials() == Credentials(KEY, SECRET)


def test_empty_variable_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", "")
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    with pytest.raises(ConfigurationError, match="api_key is missing: set APCA_API_KEY_ID"):
        AlpacaSettings()


# -- errors -------------------------------------------------------------------------------


def test_missing_keys_name_their_variables() -> None:
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings()
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "api_key is missing: set APCA_API_KEY_ID (or ALPACA_API_KEY)" in message
    assert "secret_key is missing: set APCA_API_SECRET_KEY (or ALPACA_SECRET_KEY)" in message
    assert "2 problems" in message


@pytest.mark.usefixtures("keys")
def test_missing_secret_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APCA_API_SECRET_KEY")
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings()
    assert str(info.value) == (
        "invalid Alpaca settings: secret_key is missing: set APCA_API_SECRET_KEY "
        "(or ALPACA_SECRET_KEY)"
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("api_key", "   ", "must not be empty"),
        ("secret_key", "   ", "must not be empty"),
        ("secret_key", "**********", "masked placeholder"),
        ("feed", "otc", "'iex'"),
        ("crypto_feed", "mars", "'us'"),
        ("option_feed", "bats", "'indicative'"),
        ("overflow", "block", "'drop_oldest'"),
        ("sharing", "zookeeper", "'local'"),
        ("queue_maxsize", "0", "greater than 0"),
        ("queue_maxsize", "-5", "greater than 0"),
        ("queue_maxsize", "1.5", "integer"),
        ("backoff_initial", "0", "greater than 0"),
        ("backoff_max", "-1", "greater than 0"),
        ("connection_limit_grace", "-1", "greater than or equal to 0"),
        ("ping_interval", "0", "greater than 0"),
        ("ping_timeout", "soon", "valid number"),
        ("data_timeout", "-3", "greater than 0"),
        ("open_timeout", "0", "greater than 0"),
        ("close_timeout", "0", "greater than 0"),
        ("paper", "maybe", "boolean"),
        ("allow_insecure", "perhaps", "boolean"),
        ("data_stream_url", "https://stream.data.alpaca.markets", "must start with wss://"),
        ("data_stream_url", "stream.data.alpaca.markets", "must start with wss://"),
        ("data_stream_url", "wss://", "has no host"),
        ("data_stream_url", "wss://host:99999", "not a valid URL"),
        ("data_stream_url", "wss://host/?x=1", "query string"),
        ("trading_stream_url", "http://api.alpaca.markets/stream", "must start with wss://"),
        ("api_url", "ftp://api.alpaca.markets", "must start with https://"),
        ("data_url", "wss://data.alpaca.markets", "must start with https://"),
        ("redis_url", "http://127.0.0.1:6379", "redis://"),
    ],
)
def test_invalid_value_names_field_and_variable(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    env = {"api_key": "APCA_API_KEY_ID", "secret_key": "APCA_API_SECRET_KEY"}.get(
        field, f"ALPACA_{field.upper()}"
    )
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings()
    message = str(info.value)
    assert message.startswith("invalid Alpaca settings: ")
    assert field in message
    assert f"set {env}" in message
    assert expected in message
    assert SECRET not in _all_text(info.value)


def test_value_is_quoted_for_plain_options_only(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings(api_key="  ", secret_key=SECRET, feed="otc")
    message = str(info.value)
    assert "feed='otc' is invalid" in message
    assert "api_key is invalid: must not be empty" in message


def test_every_problem_in_one_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings(feed="nope", overflow="nope", queue_maxsize=0)
    message = str(info.value)
    assert "5 problems" in message
    for name in ("api_key", "secret_key", "feed", "overflow", "queue_maxsize"):
        assert f"  - {name}" in message


def test_backoff_max_below_initial() -> None:
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings(api_key=KEY, secret_key=SECRET, backoff_initial=5, backoff_max=1)
    message = str(info.value)
    assert "backoff_max (1.0) must be >= backoff_initial (5.0)" in message
    assert "ALPACA_BACKOFF_MAX" in message
    assert "ALPACA_BACKOFF_INITIAL" in message


@pytest.mark.parametrize("host", ["example.com", "10.0.0.1", "[2001:db8::1]", "0.0.0.0"])
@pytest.mark.parametrize("field", ["data_stream_url", "trading_stream_url"])
def test_plain_ws_refused_for_non_loopback(field: str, host: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings(api_key=KEY, secret_key=SECRET, **{field: f"ws://{host}:8765/x"})
    message = str(info.value)
    assert "unencrypted" in message
    assert "ALPACA_ALLOW_INSECURE" in message
    assert f"set ALPACA_{field.upper()}" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.8.7", "[::1]", "localhost", "LOCALHOST"])
def test_plain_ws_allowed_for_loopback(host: str) -> None:
    s = AlpacaSettings(
        api_key=KEY,
        secret_key=SECRET,
        data_stream_url=f"ws://{host}:8765",
        trading_stream_url=f"ws://{host}:8766/stream",
        api_url=f"http://{host}:8767/",
    )
    assert s.data_stream_url == f"ws://{host}:8765"
    assert s.resolved_api_url == f"http://{host}:8767"


def test_plain_http_api_refused_for_non_loopback() -> None:
    with pytest.raises(ConfigurationError, match=r"api_url.*unencrypted.*set ALPACA_API_URL"):
        AlpacaSettings(api_key=KEY, secret_key=SECRET, api_url="http://example.com")


def test_data_url_defaults_to_alpaca_and_refuses_plain_http_elsewhere() -> None:
    assert AlpacaSettings(api_key=KEY, secret_key=SECRET).resolved_data_url == (
        "https://data.alpaca.markets"
    )
    with pytest.raises(ConfigurationError, match=r"data_url.*unencrypted.*set ALPACA_DATA_URL"):
        AlpacaSettings(api_key=KEY, secret_key=SECRET, data_url="http://example.com")


def test_allow_insecure_opts_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_ALLOW_INSECURE", "true")
    s = AlpacaSettings(
        api_key=KEY,
        secret_key=SECRET,
        data_stream_url="ws://example.com",
        api_url="http://example.com",
    )
    assert s.data_stream_url == "ws://example.com"
    assert s.allow_insecure is True


def test_url_with_credentials_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings(
            api_key=KEY, secret_key=SECRET, data_stream_url="wss://user:pa55word@example.com"
        )
    assert "must not carry credentials" in str(info.value)
    assert "pa55word" not in _all_text(info.value)


# -- derived values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paper", "stream", "api"),
    [
        (True, "wss://paper-api.alpaca.markets/stream", "https://paper-api.alpaca.markets"),
        (False, "wss://api.alpaca.markets/stream", "https://api.alpaca.markets"),
    ],
)
def test_resolved_urls_follow_paper(paper: bool, stream: str, api: str) -> None:
    key = KEY if paper else "AK" + KEY[2:]  # a live key for the live endpoints
    s = AlpacaSettings(api_key=key, secret_key=SECRET, paper=paper)
    assert s.resolved_trading_stream_url == stream
    assert s.resolved_api_url == api


def test_to_options() -> None:
    from alpaca_di.transport.options import ConnectionOptions

    s = AlpacaSettings(
        api_key=KEY,
        secret_key=SECRET,
        feed="sip",
        backoff_initial=0.01,
        backoff_max=0.05,
        connection_limit_grace=3,
        ping_interval=None,
        ping_timeout=5,
        data_timeout=2,
        open_timeout=4,
        close_timeout=0.2,
        allow_insecure=True,
        queue_maxsize=None,
        overflow="error",
    )
    assert s.to_options() == ConnectionOptions(
        backoff_initial=0.01,
        backoff_max=0.05,
        connection_limit_grace=3.0,
        ping_interval=None,
        ping_timeout=5.0,
        data_timeout=2.0,
        open_timeout=4.0,
        close_timeout=0.2,
        allow_insecure=True,
        feed="sip",
        queue_maxsize=None,
        overflow="error",
    )
    defaults = AlpacaSettings(api_key=KEY, secret_key=SECRET).to_options()
    assert defaults == ConnectionOptions(feed="iex")


def test_credentials() -> None:
    creds = AlpacaSettings(api_key=f"  {KEY} ", secret_key=SECRET).credentials()
    assert creds == Credentials(KEY, SECRET)
    assert creds.secret.get_secret_value() == SECRET


# -- secrets never shown ------------------------------------------------------------------


def test_repr_hides_secret_and_masks_key() -> None:
    s = AlpacaSettings(
        api_key=KEY, secret_key=SECRET, redis_url="redis://:redispass@127.0.0.1:6379/0"
    )
    for text in (repr(s), str(s), s.model_dump_json(), f"{s!r}"):
        assert SECRET not in text
    assert KEY not in repr(s)
    assert "PK********ABCD" in repr(s)
    assert "redispass" not in repr(s)
    assert "redis://:***@127.0.0.1:6379/0" in repr(s)
    assert s.redis_url == "redis://:redispass@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "scenario",
    ["missing_key_env", "missing_key_kwargs", "secret_in_wrong_field", "bad_option_env"],
)
def test_secret_never_in_error(monkeypatch: pytest.MonkeyPatch, scenario: str) -> None:
    kwargs: dict[str, object] = {}
    if scenario == "missing_key_env":
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    elif scenario == "missing_key_kwargs":
        kwargs = {"secret_key": SECRET, "feed": "bad"}
    elif scenario == "secret_in_wrong_field":
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        kwargs = {"api_key": KEY, "feed": SECRET, "sharing": SECRET}
    else:
        monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
        monkeypatch.setenv("ALPACA_OVERFLOW", "nope")
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings(**kwargs)
    exc = info.value
    assert SECRET not in _all_text(exc)
    assert exc.__context__ is None
    assert exc.__cause__ is None
    if scenario == "secret_in_wrong_field":
        assert "<secret>" in str(exc)


def test_secret_never_in_error_from_mapping() -> None:
    with pytest.raises(ConfigurationError) as info:
        settings_from_mapping({"secret_key": SECRET, "feed": SECRET})
    assert SECRET not in _all_text(info.value)
    assert info.value.__context__ is None


# -- settings_from_mapping ----------------------------------------------------------------


def test_from_mapping() -> None:
    s = settings_from_mapping({"api_key": KEY, "secret_key": SECRET, "feed": "sip"})
    assert (s.api_key, s.feed) == (KEY, "sip")
    assert s.secret_key.get_secret_value() == SECRET


def test_from_mapping_none_means_unset_unless_nullable() -> None:
    s = settings_from_mapping(
        {
            "api_key": KEY,
            "secret_key": SECRET,
            "feed": None,
            "backoff_max": None,
            "ping_interval": None,
            "queue_maxsize": None,
        }
    )
    assert (s.feed, s.backoff_max) == ("iex", 30.0)
    assert (s.ping_interval, s.queue_maxsize) == (None, None)


def test_from_mapping_ignores_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("ALPACA_FEED", "sip")
    Path(".env").write_text(f"APCA_API_KEY_ID={KEY}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        settings_from_mapping({"secret_key": SECRET, "api_key": None})
    assert str(info.value) == (
        "invalid Alpaca settings: config key 'api_key' is missing "
        "(environment variable APCA_API_KEY_ID (or ALPACA_API_KEY))"
    )
    assert settings_from_mapping({"api_key": KEY, "secret_key": SECRET}).feed == "iex"


def test_from_mapping_invalid_names_config_key_and_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        settings_from_mapping(
            {"api_key": KEY, "secret_key": SECRET, "feed": "otc", "queue_maxsize": 0}
        )
    message = str(info.value)
    assert "config key 'feed'='otc' is invalid" in message
    assert "(environment variable ALPACA_FEED)" in message
    assert "config key 'queue_maxsize'=0 is invalid" in message
    assert "(environment variable ALPACA_QUEUE_MAXSIZE)" in message


@pytest.mark.parametrize("mapping", [None, {}])
def test_from_empty_mapping(mapping: dict[str, object] | None) -> None:
    with pytest.raises(ConfigurationError, match="config key 'api_key' is missing"):
        settings_from_mapping(mapping)


def test_from_non_mapping() -> None:
    with pytest.raises(ConfigurationError, match="must be a mapping"):
        settings_from_mapping(["api_key"])  # type: ignore[arg-type]


def test_round_trip_through_di_configuration() -> None:
    original = AlpacaSettings(
        api_key="AK" + KEY[2:], secret_key=SECRET, feed="sip", ping_interval=None, paper=False
    )
    config = providers.Configuration()
    config.from_pydantic(original)
    s = settings_from_mapping(config())
    assert s == original
    assert s.credentials() == original.credentials()


def test_masked_secret_from_json_dump_is_refused() -> None:
    dumped = AlpacaSettings(api_key=KEY, secret_key=SECRET).model_dump(mode="json")
    with pytest.raises(
        ConfigurationError, match="config key 'secret_key' is invalid: is the masked"
    ):
        settings_from_mapping(dumped)


# -- Credentials ----------------------------------------------------------------------


def test_credentials_equality_and_hash() -> None:
    a = Credentials(KEY, SECRET)
    b = Credentials(KEY, SecretStr(SECRET))
    c = Credentials(KEY, SECRET + "x")
    d = Credentials("PKOTHER99999", SECRET)
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert a != d
    assert len({a, b, c, d}) == 3
    assert a != (KEY, SECRET)


def test_credentials_fingerprint_and_repr() -> None:
    creds = Credentials(KEY, SECRET)
    assert creds.fingerprint == "PK********ABCD"
    assert repr(creds) == str(creds) == "Credentials(PK********ABCD)"
    assert SECRET not in repr(creds)
    assert KEY not in repr(creds)
    assert SECRET not in repr(creds.secret)
    assert Credentials("ABCDEF", SECRET).fingerprint == "A*****"


def test_credentials_refuse_pickling() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Credentials(KEY, SECRET))


@pytest.mark.parametrize(("key", "secret"), [("", SECRET), ("  ", SECRET), (KEY, ""), (KEY, 5)])
def test_credentials_validation(key: str, secret: object) -> None:
    with pytest.raises(ValueError) as info:
        Credentials(key, secret)  # type: ignore[arg-type]
    assert "APCA_API" in str(info.value)


@pytest.mark.parametrize(("key", "paper"), [("AKLIVE0001ABCD", True), ("PKPAPER001ABCD", False)])
def test_a_key_for_the_other_environment_is_refused(key: str, paper: bool) -> None:
    with pytest.raises(ConfigurationError, match="ALPACA_PAPER"):
        AlpacaSettings(api_key=key, secret_key=SECRET, paper=paper)


def test_custom_endpoints_skip_the_paper_key_check() -> None:
    s = AlpacaSettings(
        api_key="PKPAPER001ABCD", secret_key=SECRET, paper=False, api_url="http://127.0.0.1:1"
    )
    assert s.paper is False


def test_settings_refuse_pickling_without_showing_the_secret() -> None:
    settings = AlpacaSettings(api_key=KEY, secret_key=SECRET)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="AlpacaSettings cannot be pickled") as caught:
            pickle.dumps(settings, protocol=protocol)
        assert SECRET not in _all_text(caught.value)
    # copies that never leave the process still work
    assert settings.model_copy(update={"feed": "sip"}).feed == "sip"


# Shaped like Alpaca's own: a 20-character upper-case key id and a 40-character mixed-case secret.
REAL_SHAPED_KEY = "PKZ8Q2M4N6B1V3C5X7L9"
REAL_SHAPED_SECRET = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"


def test_real_shaped_keys_are_accepted() -> None:
    settings = AlpacaSettings(api_key=REAL_SHAPED_KEY, secret_key=REAL_SHAPED_SECRET)
    assert settings.api_key == REAL_SHAPED_KEY


@pytest.mark.parametrize(
    ("key", "secret", "field", "env"),
    [
        (REAL_SHAPED_SECRET, REAL_SHAPED_KEY, "api_key", "APCA_API_KEY_ID"),
        (REAL_SHAPED_SECRET, "another-secret-value", "api_key", "APCA_API_KEY_ID"),
        (KEY, REAL_SHAPED_KEY, "secret_key", "APCA_API_SECRET_KEY"),
    ],
    ids=["swapped", "secret-as-key", "key-as-secret"],
)
def test_a_secret_shaped_key_or_a_swapped_pair_is_refused_naming_the_fields(
    key: str, secret: str, field: str, env: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AlpacaSettings(api_key=key, secret_key=secret)
    text = _all_text(caught.value)
    assert field in text
    assert env in text
    assert "swapped" in text
    assert REAL_SHAPED_SECRET not in text
    assert "another-secret-value" not in text


def test_an_unknown_config_key_is_refused_naming_the_nearest_setting() -> None:
    with pytest.raises(ConfigurationError) as info:
        settings_from_mapping({"api_key": KEY, "secret_key": SECRET, "feeds": "sip"})
    assert "config key 'feeds' is not a setting: did you mean 'feed'?" in str(info.value)
    assert SECRET not in _all_text(info.value)
    with pytest.raises(ConfigurationError, match="'zzz' is not a setting: see the configuration"):
        settings_from_mapping({"api_key": KEY, "secret_key": SECRET, "zzz": 1})


def test_an_unknown_argument_is_refused_naming_the_nearest_setting() -> None:
    with pytest.raises(ConfigurationError, match="argument 'papr' is not a setting: did you mean"):
        AlpacaSettings(api_key=KEY, secret_key=SECRET, papr=False)


def test_a_container_config_typo_fails_at_first_resolution() -> None:
    from alpaca_di import AlpacaContainer

    container = AlpacaContainer()
    container.config.from_dict({"api_key": KEY, "secret_key": SECRET, "feeds": "sip"})
    with pytest.raises(ConfigurationError, match="did you mean 'feed'"):
        container.settings()


def test_a_misspelt_environment_variable_is_reported(
    keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPACA_FEEDS", "sip")
    monkeypatch.setenv("ALPACA_TOOLKIT_HOME", "/opt/other-tool")  # another tool's: left alone
    with pytest.warns(UnknownSettingWarning) as caught:
        settings = AlpacaSettings()
    assert [str(w.message) for w in caught] == [
        "environment variable ALPACA_FEEDS is not an Alpaca setting: did you mean ALPACA_FEED?"
    ]
    assert settings.feed == "iex"
    monkeypatch.setenv("ALPACA_STRICT_ENV", "true")
    with pytest.raises(ConfigurationError, match="did you mean ALPACA_FEED"):
        AlpacaSettings()


def test_other_tools_variables_raise_no_warning(
    keys: None, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    monkeypatch.setenv("ALPACA_TOOLKIT_HOME", "/opt/other-tool")
    monkeypatch.setenv("ALPACA_STRICT_ENV", "1")
    AlpacaSettings()
    assert not [w for w in recwarn if issubclass(w.category, UnknownSettingWarning)]


@pytest.mark.usefixtures("keys")
def test_errors_carry_the_fields_and_variables_at_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_FEED", "sipp")
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings()
    assert info.value.fields == ("feed",)
    assert info.value.env_vars == ("ALPACA_FEED",)
    again = pickle.loads(pickle.dumps(info.value))
    assert (str(again), again.env_vars) == (str(info.value), ("ALPACA_FEED",))
    assert SECRET not in _all_text(info.value)


def test_errors_from_a_mapping_carry_their_fields() -> None:
    with pytest.raises(ConfigurationError) as info:
        settings_from_mapping({"api_key": KEY, "secret_key": SECRET, "paper": "maybe"})
    assert info.value.fields == ("paper",)
    assert info.value.env_vars == ("ALPACA_PAPER",)
    with pytest.raises(ConfigurationError) as info:
        AlpacaSettings()
    assert info.value.env_vars == ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY")
