"""Production Redis: TLS with an ACL user, and a Sentinel failover, on private redis-servers.

Each test starts its own redis-server processes on spare loopback ports (never
the shared 6379) and builds the scale-out from :class:`AlpacaSettings` alone
(``redis_url``, ``redis_username``, ``redis_password``, ``redis_tls_*``,
``redis_sentinel*``), through :func:`redis_registry`: a leader candidate and a
follower-only registry in this process (the TLS test adds a spawned worker
process), one emulated Alpaca account.

* TLS + ACL: data and trade updates flow through ``rediss://`` as user
  ``alice``; the password appears in no captured log event, health JSON,
  exception, repr, nor in any key or value alpaca-di wrote (every key dumped).
* Sentinel: a primary, a replica and one sentinel; the primary is SIGKILLed;
  once the sentinel has promoted the replica, every trade update published
  from then on reaches both processes, and quotes flow again.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
from _redis_servers import RedisServer, make_tls_files, redis_server_problem, spare_ports, wait_for
from _scaleout_support import KEY, SECRET
from _scaleout_worker import run_worker
from pydantic import SecretStr

from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import RedisUnavailableError
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.registry import ConnectionRegistry
from alpaca_di.scaleout.options import SharingOptions
from alpaca_di.scaleout.registry import (
    RedisConnectionRegistry,
    check_redis,
    redis_connection,
    redis_registry,
)
from alpaca_di.settings import AlpacaSettings, endpoint_for
from alpaca_di.testing.messages import quote
from alpaca_di.testing.recorder import Recorder

IEX = "/v2/iex"
PASSWORD = "prod-Redis-Passw0rd-4c1e"
SENTINEL_PASSWORD = "prod-Sentinel-Passw0rd-9b2d"
WRONG_PASSWORD = "not-the-Passw0rd-d00d"
_PROBLEM = redis_server_problem()


@pytest.fixture(autouse=True)
def _require_redis() -> None:
    """Overrides the conftest's check of 6379: these tests run their own servers."""
    if _PROBLEM:
        pytest.skip(_PROBLEM)


@pytest.fixture
def emulator() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emu:
        yield emu


@pytest.fixture
def servers() -> Iterator[list[RedisServer]]:
    started: list[RedisServer] = []
    yield started
    for server in reversed(started):
        server.stop()


def _fast_sharing(prefix: str) -> SharingOptions:
    return SharingOptions(
        prefix=prefix,
        lock_ttl=1.5,
        renew_interval=0.25,
        heartbeat_interval=0.25,
        heartbeat_ttl=1.0,
        command_timeout=1.0,
    )


def _settings(emulator: AlpacaEmulator, **redis_settings: Any) -> AlpacaSettings:
    return AlpacaSettings(
        api_key=KEY,
        secret_key=SECRET,
        data_stream_url=emulator.ws_url,
        trading_stream_url=emulator.trading_stream_url,
        sharing="redis",
        backoff_initial=0.05,
        backoff_max=0.25,
        close_timeout=0.5,
        open_timeout=5.0,
        **redis_settings,
    )


class Deployment:
    """A leader candidate and a follower-only registry, each with a stock and a trading hub."""

    def __init__(self, settings: AlpacaSettings) -> None:
        sharing = _fast_sharing(settings.redis_prefix)
        self.registries: list[ConnectionRegistry] = []
        self.quotes: list[Recorder] = []
        self.updates: list[Recorder] = []
        self.hubs: list[tuple[RedisConnectionRegistry, StreamHub]] = []
        creds, options = settings.credentials(), settings.to_options()
        for candidate in (True, False):
            registry = redis_registry(
                settings, sharing=sharing, candidate=candidate, fallback_local=False
            )
            assert isinstance(registry, RedisConnectionRegistry)
            self.registries.append(registry)
            stock = registry.acquire(creds, "stock", endpoint_for(settings, "stock"), options).hub
            trading = registry.acquire(
                creds, "trading", endpoint_for(settings, "trading"), options
            ).hub
            quotes, updates = Recorder(), Recorder()
            stock.subscribe(quotes, quotes=["AAPL"]).wait_confirmed(15)
            trading.subscribe(updates, trade_updates=True, raw=True).wait_confirmed(15)
            self.quotes.append(quotes)
            self.updates.append(updates)
            self.hubs += [(registry, stock), (registry, trading)]

    def all_connected(self) -> bool:
        for registry, hub in self.hubs:
            health = registry.sharing_health(hub)
            if health.redis != "up" or health.state != "connected":
                return False
        return True

    def update_seqs(self, index: int) -> set[int]:
        return {int(update["seq"]) for update in self.updates[index].items}

    def has_updates(self, index: int, seqs: set[int]) -> Callable[[], bool]:
        return lambda: self.update_seqs(index) >= seqs

    def health_json(self) -> list[str]:
        return [registry.health().model_dump_json() for registry in self.registries]

    def errors(self) -> list[str]:
        found = []
        for _registry, hub in self.hubs:
            error = hub.health().last_error
            if error:
                found.append(str(error))
        return found

    def close(self) -> None:
        for registry in self.registries:
            registry.close_all()


def _update(seq: int) -> dict[str, Any]:
    order = {"id": f"order-{seq}", "client_order_id": f"c-{seq}", "symbol": "AAPL"}
    return {"event": "fill", "timestamp": "2024-01-02T15:30:00Z", "order": order, "seq": seq}


def _dump_every_key(client: redis.Redis) -> tuple[list[bytes], bytes]:
    """Every key of the server and everything in it, as one byte string."""
    names = list(client.scan_iter(count=1000))
    dump = b""
    for name in names:
        dump += name
        kind = client.type(name)
        if kind == b"string":
            dump += client.get(name) or b""
        elif kind == b"hash":
            dump += b"".join(k + v for k, v in client.hgetall(name).items())
        elif kind == b"stream":
            for entry_id, fields in client.xrange(name):
                dump += entry_id + b"".join(k + v for k, v in fields.items())
        elif kind == b"zset":
            pairs = client.zrange(name, 0, -1, withscores=True)
            dump += b"".join(member + str(score).encode() for member, score in pairs)
        elif kind == b"list":
            dump += b"".join(client.lrange(name, 0, -1))
        elif kind == b"set":
            dump += b"".join(client.smembers(name))
        else:
            raise AssertionError(f"key {name!r} of unexpected type {kind!r}")
    return names, dump


def _assert_hidden(texts: list[str], *secrets: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def _expect(results: Any, want: tuple[Any, ...], timeout: float) -> tuple[Any, ...]:
    """The first item on the worker's ``results`` queue that starts with ``want``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"within {timeout} s: the worker reported {want}")
        try:
            item = tuple(results.get(timeout=remaining))
        except queue.Empty:
            continue
        if item[: len(want)] == want:
            return item


def _make_client(port: int, **kwargs: Any) -> Callable[[], redis.Redis]:
    def make() -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, **kwargs
        )

    return make


# -- TLS and an ACL user ----------------------------------------------------------------------


def test_tls_and_an_acl_user_carry_the_scale_out_and_the_password_shows_nowhere(
    tmp_path: Path, emulator: AlpacaEmulator, servers: list[RedisServer]
) -> None:
    files = make_tls_files(tmp_path)
    (port,) = spare_ports(1)
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f"port 0\ntls-port {port}\nbind 127.0.0.1\n"
        f"tls-cert-file {files['cert']}\ntls-key-file {files['key']}\n"
        f"tls-ca-cert-file {files['ca']}\ntls-auth-clients no\n"
        "save \"\"\nappendonly no\n"
        f"user alice on >{PASSWORD} ~* &* +@all\nuser default off\n",
        encoding="utf-8",
    )
    admin = _make_client(
        port, ssl=True, ssl_ca_certs=str(files["ca"]), username="alice", password=PASSWORD
    )
    server = RedisServer([str(conf)], cwd=tmp_path, name="redis-tls", client=admin)
    servers.append(server)
    server.wait_ready()

    settings = _settings(
        emulator,
        redis_url=f"rediss://127.0.0.1:{port}/0",
        redis_username="alice",
        redis_password=PASSWORD,
        redis_tls_ca_file=str(files["ca"]),
        redis_prefix=f"prod-tls-{uuid.uuid4().hex[:8]}",
    )
    # A third member in its own process (spawned, as the worker tests do), configured
    # through the same settings; it joins as a follower of this process's leader.
    ctx = multiprocessing.get_context("spawn")
    results, commands = ctx.Queue(), ctx.Queue()
    worker_config = {
        "key": KEY,
        "secret": SECRET,
        "data_url": emulator.ws_url,
        "trading_url": emulator.trading_stream_url,
        "redis_url": settings.redis_url,
        "symbols": [["AAPL"]],
        "sharing": dataclasses.asdict(_fast_sharing(settings.redis_prefix)),
        "settings": {
            "redis_username": "alice",
            "redis_password": PASSWORD,
            "redis_tls_ca_file": str(files["ca"]),
        },
    }
    worker = ctx.Process(target=run_worker, args=(0, worker_config, commands, results))
    with structlog.testing.capture_logs() as logs:
        deployment = Deployment(settings)
        try:
            leader_health, follower_health = (
                registry.health() for registry in deployment.registries
            )
            assert {c.role for c in leader_health.connections} == {"leader"}
            assert {c.role for c in follower_health.connections} == {"follower"}
            worker.start()
            _expect(results, ("ready", 0), 45)
            assert emulator.counters(KEY, IEX).max_concurrent == 1

            emulator.publish(IEX, [quote("AAPL", bid_size=7)])
            for quotes in deployment.quotes:
                assert quotes.wait_for(1)[-1].bid_size == 7
            _expect(results, ("quote", 0, "AAPL", 7), 10)
            for seq in range(3):
                assert emulator.push_trade_update(KEY, _update(seq)) == 1
            for updates in deployment.updates:
                assert [u["seq"] for u in updates.wait_for(3)] == [0, 1, 2]
            for seq in range(3):
                _expect(results, ("update", 0, seq), 10)
            commands.put("health")
            worker_health = _expect(results, ("health", 0), 10)[2]
            assert {c["role"] for c in worker_health} == {"follower"}
            commands.put("stop")
            _expect(results, ("stopped", 0), 15)
            worker.join(10)
            assert worker.exitcode == 0

            # Every connection alpaca-di holds is alice's, over TLS (plain port is off).
            client = server.client()
            try:
                users = {entry["user"] for entry in client.client_list()}
            finally:
                client.close()
            assert users == {"alice"}
            healths = [*deployment.health_json(), repr(worker_health)]
            reprs = [repr(registry) for registry in deployment.registries]
        finally:
            deployment.close()
            if worker.is_alive():
                worker.kill()
                worker.join(5)

    # A wrong password is an error that quotes neither it nor the right one.
    wrong = dataclasses.replace(redis_connection(settings), password=SecretStr(WRONG_PASSWORD))
    with pytest.raises(RedisUnavailableError) as caught:
        check_redis(wrong, timeout=2.0)
    assert "ALPACA_REDIS_URL" in str(caught.value)
    with pytest.raises(TypeError):
        pickle.dumps(redis_connection(settings))

    assert any(entry["event"] == "gateway.leading" for entry in logs)
    texts = [
        repr(logs),
        *healths,
        *reprs,
        *deployment.errors(),
        str(caught.value),
        repr(caught.value),
        repr(settings),
        repr(redis_connection(settings)),
        repr(wrong),
    ]
    _assert_hidden(texts, PASSWORD, WRONG_PASSWORD, SECRET)

    client = server.client()
    try:
        names, dump = _dump_every_key(client)
    finally:
        client.close()
    assert any(name.startswith(settings.redis_prefix.encode()) for name in names)
    for secret in (PASSWORD, SECRET, KEY, "alice"):
        assert secret.encode() not in dump


# -- Sentinel failover ------------------------------------------------------------------------


def test_a_sentinel_failover_keeps_the_deployment_delivering(
    tmp_path: Path,
    emulator: AlpacaEmulator,
    servers: list[RedisServer],
) -> None:
    primary_port, replica_port, sentinel_port = spare_ports(3)
    auth = f'requirepass "{PASSWORD}"\nmasterauth "{PASSWORD}"\n'
    plain = 'bind 127.0.0.1\nsave ""\nappendonly no\n'
    (tmp_path / "primary.conf").write_text(f"port {primary_port}\n{plain}{auth}")
    (tmp_path / "replica.conf").write_text(
        f"port {replica_port}\n{plain}{auth}replicaof 127.0.0.1 {primary_port}\n"
    )
    (tmp_path / "sentinel.conf").write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor mymaster 127.0.0.1 {primary_port} 1\n"
        f'sentinel auth-pass mymaster "{PASSWORD}"\n'
        "sentinel down-after-milliseconds mymaster 500\n"
        "sentinel failover-timeout mymaster 3000\n"
        f'requirepass "{SENTINEL_PASSWORD}"\n'
    )
    primary = RedisServer(
        [str(tmp_path / "primary.conf")], cwd=tmp_path, name="primary",
        client=_make_client(primary_port, password=PASSWORD),
    )  # fmt: skip
    replica = RedisServer(
        [str(tmp_path / "replica.conf")], cwd=tmp_path, name="replica",
        client=_make_client(replica_port, password=PASSWORD),
    )  # fmt: skip
    servers += [primary, replica]
    primary.wait_ready()
    replica.wait_ready()

    def replica_linked() -> bool:
        client = replica.client()
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()

    wait_for(replica_linked, 15, "the replica is in sync with the primary")
    sentinel = RedisServer(
        [str(tmp_path / "sentinel.conf"), "--sentinel"], cwd=tmp_path, name="sentinel",
        client=_make_client(sentinel_port, password=SENTINEL_PASSWORD),
    )  # fmt: skip
    servers.append(sentinel)
    sentinel.wait_ready()

    def primary_per_sentinel() -> int | None:
        client = sentinel.client()
        try:
            address = client.sentinel_get_master_addr_by_name("mymaster")
            return int(address[1]) if address else None
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()

    def sentinel_knows_the_replica() -> bool:
        client = sentinel.client()
        try:
            replicas = client.sentinel_slaves("mymaster")
        finally:
            client.close()
        return any(
            int(r["port"]) == replica_port and not r["is_sdown"] and not r["is_disconnected"]
            for r in replicas
        )

    wait_for(sentinel_knows_the_replica, 15, "the sentinel discovered the replica")
    assert primary_per_sentinel() == primary_port

    settings = _settings(
        emulator,
        redis_url="redis:///0",
        redis_password=PASSWORD,
        redis_sentinels=f"127.0.0.1:{sentinel_port}",
        redis_sentinel_master="mymaster",
        redis_sentinel_password=SENTINEL_PASSWORD,
        redis_prefix=f"prod-sentinel-{uuid.uuid4().hex[:8]}",
    )
    with structlog.testing.capture_logs() as logs:
        deployment = Deployment(settings)
        try:
            for seq in range(3):
                assert emulator.push_trade_update(KEY, _update(seq)) == 1
            for index in (0, 1):
                wait_for(deployment.has_updates(index, {0, 1, 2}), 10, "updates before failover")

            primary.kill()
            # Updates sent while Redis fails over are not asserted: the leader may drop
            # what it had not written when it steps down (see docs/scale-out.md).
            for seq in (50, 51, 52):
                emulator.push_trade_update(KEY, _update(seq))
            wait_for(lambda: primary_per_sentinel() == replica_port, 30,
                     "the sentinel promoted the replica")  # fmt: skip

            def promoted() -> bool:
                client = replica.client()
                try:
                    return client.info("replication").get("role") == "master"
                finally:
                    client.close()

            wait_for(promoted, 15, "the replica runs as the primary")
            wait_for(deployment.all_connected, 30, "both processes reconnected after failover")

            # The failover is complete for the deployment once a trade update goes all the
            # way through again (Alpaca -> leader -> new primary -> both processes). Probes
            # sent before that are in the failover window: the leader may still be stepping
            # down, and what it had not written to the new primary is not guaranteed.
            probes = iter(range(1000, 2000))

            def a_probe_went_through() -> bool:
                if deployment.update_seqs(0) & deployment.update_seqs(1) & set(range(1000, 2000)):
                    return True
                emulator.push_trade_update(KEY, _update(next(probes)))
                return False

            wait_for(a_probe_went_through, 30, "a trade update went through after the failover")

            # From here on nothing is lost: every update published reaches both processes once.
            after = list(range(100, 110))
            for seq in after:
                assert emulator.push_trade_update(KEY, _update(seq)) == 1
            for index in (0, 1):
                what = f"process {index} got every update published after the failover"
                wait_for(deployment.has_updates(index, set(after)), 15, what)
                seqs = [int(u["seq"]) for u in deployment.updates[index].items]
                assert len(seqs) == len(set(seqs)), f"an update arrived twice: {seqs}"

            # Market data is best effort (never replayed): it flows again.
            sent = iter(range(100, 10_000))

            def quotes_flow() -> bool:
                if all(any(m.bid_size >= 100 for m in q.items) for q in deployment.quotes):
                    return True
                emulator.publish(IEX, [quote("AAPL", bid_size=next(sent))])
                return False

            wait_for(quotes_flow, 15, "quotes reach both processes after the failover")
            healths = deployment.health_json()
        finally:
            deployment.close()

    texts = [repr(logs), *healths, *deployment.errors(), repr(settings)]
    texts += [repr(redis_connection(settings))]
    _assert_hidden(texts, PASSWORD, SENTINEL_PASSWORD, SECRET)
    client = replica.client()
    try:
        _names, dump = _dump_every_key(client)
    finally:
        client.close()
    for secret in (PASSWORD, SENTINEL_PASSWORD, SECRET, KEY):
        assert secret.encode() not in dump
