"""RedisConnection and redis_client: TLS, ACL and Sentinel options, and no password shown."""

from __future__ import annotations

import copy
import pickle
import ssl

import pytest
from pydantic import SecretStr
from redis.asyncio.sentinel import SentinelConnectionPool

from alpaca_di.errors import ConfigurationError
from alpaca_di.scaleout.client import redis_client, sync_redis_client
from alpaca_di.scaleout.options import RedisConnection
from alpaca_di.scaleout.registry import check_redis, redis_connection
from alpaca_di.settings import AlpacaSettings

PASSWORD = "r3dis-Passw0rd-xyz"
SENTINEL_PASSWORD = "s3ntinel-Passw0rd-abc"


def test_repr_and_describe_show_no_password() -> None:
    conn = RedisConnection(
        f"rediss://alice:{PASSWORD}@cache:6380/0",
        username="alice",
        password=SecretStr(PASSWORD),
        sentinel_password=SecretStr(SENTINEL_PASSWORD),
    )
    for text in (repr(conn), str(conn), conn.describe()):
        assert PASSWORD not in text
        assert SENTINEL_PASSWORD not in text
    assert "rediss://alice:***@cache:6380/0" in repr(conn)
    sentinel = RedisConnection("redis://", sentinels=(("10.0.0.1", 26379), ("::1", 26380)))
    assert sentinel.describe() == "sentinel://10.0.0.1:26379,[::1]:26380/mymaster"


def test_it_refuses_to_be_pickled_or_copied() -> None:
    conn = RedisConnection("redis://h/0", password=SecretStr(PASSWORD))
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(conn)
    with pytest.raises(TypeError):
        copy.copy(conn)


def test_a_bad_verify_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ALPACA_REDIS_TLS_VERIFY"):
        RedisConnection("rediss://h/0", tls_verify="sometimes")  # type: ignore[arg-type]


def test_the_client_carries_user_password_and_tls_options() -> None:
    conn = RedisConnection(
        "rediss://cache:6380/3",
        username="alice",
        password=SecretStr(PASSWORD),
        tls_ca_file="/etc/ca.pem",
        tls_verify="required",
    )
    client = redis_client(conn, timeout=1.5)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("alice", PASSWORD, 3)
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["ssl_check_hostname"] is True
    assert PASSWORD not in repr(client)
    sync = sync_redis_client(RedisConnection("redis://cache/0", tls_verify="none"), timeout=1.0)
    assert "ssl_ca_certs" not in sync.connection_pool.connection_kwargs  # plain URL: no TLS
    sync.close()


def test_with_sentinels_the_client_asks_them_for_the_primary() -> None:
    settings = AlpacaSettings(
        api_key="PKTEST1234ABCD",
        secret_key="sUp3r-s3cret-VALUE-9f8e7d",
        redis_url="redis:///4",
        redis_password=PASSWORD,
        redis_sentinels="127.0.0.1:26379,127.0.0.1:26380",
        redis_sentinel_master="primary",
        redis_sentinel_password=SENTINEL_PASSWORD,
    )
    client = redis_client(redis_connection(settings), timeout=1.0)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "primary"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (4, PASSWORD)
    sentinels = pool.sentinel_manager.sentinels
    assert len(sentinels) == 2
    assert sentinels[0].connection_pool.connection_kwargs["password"] == SENTINEL_PASSWORD
    for text in (repr(client), repr(pool)):
        assert PASSWORD not in text
        assert SENTINEL_PASSWORD not in text


def test_check_redis_names_the_variable_and_hides_the_password() -> None:
    from alpaca_di.errors import RedisUnavailableError

    with pytest.raises(RedisUnavailableError) as caught:
        check_redis(
            RedisConnection("redis://alice@127.0.0.1:1/0", password=SecretStr(PASSWORD)),
            timeout=0.5,
        )
    assert "ALPACA_REDIS_URL" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    with pytest.raises(RedisUnavailableError) as caught:
        check_redis(
            RedisConnection(
                "redis://",
                sentinels=(("127.0.0.1", 1),),
                sentinel_password=SecretStr(SENTINEL_PASSWORD),
            ),
            timeout=0.5,
        )
    assert "ALPACA_REDIS_SENTINELS" in str(caught.value)
    assert SENTINEL_PASSWORD not in str(caught.value)
