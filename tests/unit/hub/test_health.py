"""HealthReport and ConnectionHealth: readiness, in-use and the liveness bound."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from alpaca_di.hub.health import ConnectionHealth, HealthReport

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)


def connection(**fields: Any) -> ConnectionHealth:
    values: dict[str, Any] = {
        "kind": "stock",
        "endpoint": "wss://stream.data.alpaca.markets/v2/iex",
        "fingerprint": "PK********ABCD",
        "state": "connected",
        "state_since": NOW,
        "healthy": True,
        "consumers": 1,
        "subscriptions": {"quotes": 1},
        "messages_received": 0,
        "messages_delivered": 0,
        "messages_dropped": 0,
        "malformed": 0,
        "handler_errors": 0,
        "reconnects": 0,
    }
    values.update(fields)
    return ConnectionHealth(**values)


def test_connected_and_confirmed_is_ready() -> None:
    health = connection()
    assert health.in_use
    assert health.ever_connected
    assert health.ready
    assert health.healthy
    assert HealthReport.of([health]).ready


def test_pending_subscriptions_are_not_ready_but_healthy() -> None:
    health = connection(subscriptions_pending=2)
    assert not health.ready
    assert health.healthy
    report = HealthReport.of([health])
    assert report.healthy
    assert not report.ready


def test_in_use_but_never_connected_is_neither_healthy_nor_ready() -> None:
    for state in ("idle", "connecting", "authenticating"):
        health = connection(state=state, ever_connected=False, healthy=True)
        assert health.in_use
        assert not health.healthy, state
        assert not health.ready, state
        report = HealthReport.of([health])
        assert not report.healthy
        assert not report.ready


def test_reconnecting_after_a_connect_keeps_its_history() -> None:
    health = connection(state="connecting", ever_connected=True, healthy=True)
    assert health.healthy
    assert not health.ready


def test_unused_idle_connection_does_not_block_readiness() -> None:
    unused = connection(kind="news", state="idle", consumers=0, subscriptions={})
    assert not unused.in_use
    assert not unused.ever_connected
    assert unused.healthy
    assert not unused.ready
    report = HealthReport.of([connection(), unused])
    assert report.healthy
    assert report.ready


def test_report_without_connections_is_ready() -> None:
    report = HealthReport.of([])
    assert report.healthy
    assert report.ready


def test_derived_fields_come_from_state_and_transitions_when_absent() -> None:
    health = connection(
        state="reconnecting",
        healthy=False,
        consumers=0,
        transitions=[{"state": "connected", "at": NOW}, {"state": "reconnecting", "at": NOW}],
    )
    assert health.in_use
    assert health.ever_connected


def test_ready_is_computed_never_taken_from_the_input() -> None:
    health = connection(state="authenticating", ever_connected=False, ready=True)
    assert not health.ready
    report = HealthReport(healthy=True, connections=[health], ready=True)
    assert not report.ready


def test_json_round_trip_keeps_every_field_and_the_old_shape_still_parses() -> None:
    report = HealthReport.of([connection(), connection(kind="news", state="idle", consumers=0)])
    data = report.model_dump(mode="json")
    assert {"generated_at", "healthy", "connections", "ready"} <= set(data)
    assert {"in_use", "ever_connected", "subscriptions_pending", "ready"} <= set(
        data["connections"][0]
    )
    assert HealthReport.model_validate_json(report.model_dump_json()) == report
    old = {
        "generated_at": NOW.isoformat(),
        "healthy": True,
        "connections": [
            {
                key: value
                for key, value in data["connections"][0].items()
                if key not in ("in_use", "ever_connected", "subscriptions_pending", "ready")
            }
        ],
    }
    parsed = HealthReport.model_validate(old)
    assert parsed.ready
    assert parsed.connections[0].in_use
