"""The redis_* settings: names, parsing, rules, and passwords kept out of every text."""

from __future__ import annotations

import os
import pickle
import traceback
from pathlib import Path

import pytest
from pydantic import SecretStr

from alpaca_di.errors import ConfigurationError
from alpaca_di.settings import AlpacaSettings, settings_from_mapping

KEY = "PKTEST1234ABCD"
SECRET = "sUp3r-s3cret-VALUE-9f8e7d"
PASSWORD = "r3dis-Passw0rd-xyz"
SENTINEL_PASSWORD = "s3ntinel-Passw0rd-abc"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("APCA_", "ALPACA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)


def _text(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def test_every_redis_option_reads_its_alpaca_redis_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    env = {
        "ALPACA_REDIS_URL": "rediss://cache.internal:6380/2",
        "ALPACA_REDIS_USERNAME": "alice",
        "ALPACA_REDIS_PASSWORD": PASSWORD,
        "ALPACA_REDIS_TLS_CA_FILE": str(ca),
        "ALPACA_REDIS_TLS_CERT_FILE": str(ca),
        "ALPACA_REDIS_TLS_KEY_FILE": str(ca),
        "ALPACA_REDIS_TLS_VERIFY": "Optional",
        "ALPACA_REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26380,[::1]:26381",
        "ALPACA_REDIS_SENTINEL_MASTER": "primary",
        "ALPACA_REDIS_SENTINEL_USERNAME": "watcher",
        "ALPACA_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "ALPACA_REDIS_PREFIX": "app",
        "ALPACA_REDIS_ROLE": "follower",
        "ALPACA_REDIS_FALLBACK_LOCAL": "true",
        "ALPACA_REDIS_LOCK_TTL": "6",
        "ALPACA_REDIS_CONSUMER_ID": "web-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = AlpacaSettings()
    assert s.redis_username == "alice"
    assert isinstance(s.redis_password, SecretStr)
    assert s.redis_password.get_secret_value() == PASSWORD
    assert s.redis_tls_ca_file == str(ca)
    assert s.redis_tls_verify == "optional"
    assert s.redis_sentinels == ("10.0.0.1:26379", "10.0.0.2:26380", "[::1]:26381")
    assert s.redis_sentinel_addresses == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381))
    assert (s.redis_sentinel_master, s.redis_sentinel_username) == ("primary", "watcher")
    assert s.redis_sentinel_password is not None
    assert s.redis_sentinel_password.get_secret_value() == SENTINEL_PASSWORD
    assert (s.redis_prefix, s.redis_role, s.redis_fallback_local) == ("app", "follower", True)
    assert (s.redis_lock_ttl, s.redis_consumer_id) == (6.0, "web-1")
    for text in (repr(s), str(s), s.model_dump_json()):
        assert PASSWORD not in text
        assert SENTINEL_PASSWORD not in text
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_the_defaults_change_nothing_for_a_plain_local_redis() -> None:
    s = AlpacaSettings()
    assert (s.redis_url, s.redis_username, s.redis_password) == (
        "redis://127.0.0.1:6379/0",
        None,
        None,
    )
    assert (s.redis_sentinels, s.redis_tls_verify, s.redis_role) == ((), "required", "candidate")
    assert (s.redis_prefix, s.redis_lock_ttl, s.redis_fallback_local) == ("alpaca-di", 3.0, False)


def test_the_container_configuration_sets_them_too() -> None:
    s = settings_from_mapping(
        {
            "api_key": KEY,
            "secret_key": SECRET,
            "redis_password": PASSWORD,
            "redis_sentinels": ["127.0.0.1:26379"],
        }
    )
    assert s.redis_password is not None
    assert s.redis_password.get_secret_value() == PASSWORD
    assert s.redis_sentinel_addresses == (("127.0.0.1", 26379),)


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"redis_sentinels": "10.0.0.1"}, "ALPACA_REDIS_SENTINELS"),
        ({"redis_sentinels": "10.0.0.1:0"}, "ALPACA_REDIS_SENTINELS"),
        ({"redis_tls_ca_file": "/no/such/ca.pem"}, "ALPACA_REDIS_TLS_CA_FILE"),
        ({"redis_tls_verify": "maybe"}, "ALPACA_REDIS_TLS_VERIFY"),
        ({"redis_role": "boss"}, "ALPACA_REDIS_ROLE"),
        ({"redis_prefix": "my app"}, "ALPACA_REDIS_PREFIX"),
        ({"redis_consumer_id": "a b"}, "ALPACA_REDIS_CONSUMER_ID"),
        ({"redis_lock_ttl": "0"}, "ALPACA_REDIS_LOCK_TTL"),
        ({"redis_lock_ttl": "inf"}, "ALPACA_REDIS_LOCK_TTL"),
        (
            {"redis_url": f"redis://:{PASSWORD}@h/0", "redis_password": PASSWORD},
            "ALPACA_REDIS_PASSWORD",
        ),
        (
            {"redis_url": "unix:///tmp/r.sock", "redis_sentinels": "h:26379"},
            "ALPACA_REDIS_SENTINELS",
        ),
        (
            {"redis_url": "rediss://cache.internal/0", "redis_tls_verify": "none"},
            "ALPACA_ALLOW_INSECURE",
        ),
    ],
)
def test_a_bad_value_names_its_variable_and_never_a_password(
    values: dict[str, str], names: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AlpacaSettings(redis_sentinel_password=SENTINEL_PASSWORD, **values)
    text = _text(caught.value)
    assert names in text
    assert PASSWORD not in text
    assert SENTINEL_PASSWORD not in text


def test_tls_files_need_a_rediss_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigurationError, match="rediss://"):
        AlpacaSettings(redis_tls_ca_file=str(ca))
    with pytest.raises(ConfigurationError, match="ALPACA_REDIS_TLS_KEY_FILE"):
        AlpacaSettings(redis_url="rediss://h/0", redis_tls_key_file=str(ca))
    # Loopback, or an explicit opt-in, may skip the certificate check.
    assert AlpacaSettings(redis_url="rediss://127.0.0.1/0", redis_tls_verify="none")
    assert AlpacaSettings(
        redis_url="rediss://cache/0", redis_tls_verify="none", allow_insecure=True
    )


def test_a_password_from_the_environment_is_kept_out_of_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPACA_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("ALPACA_REDIS_PREFIX", PASSWORD + " with a space")
    with pytest.raises(ConfigurationError) as caught:
        AlpacaSettings()
    assert "ALPACA_REDIS_PREFIX" in str(caught.value)
    assert PASSWORD not in _text(caught.value)
