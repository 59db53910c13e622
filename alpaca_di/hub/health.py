"""Health reports: what every shared connection is doing, safe to publish.

No field ever holds a secret: accounts appear as masked ``fingerprint`` values::

    report = container.health()
    print(report.model_dump_json(indent=2))
    assert all(c.state == "connected" for c in report.connections)

Two verdicts, for the two probes of an orchestrator:

* ``healthy`` (liveness): nothing has failed, is reconnecting or closed, and no
  connection in use is still waiting for its first ``connected``.
* ``ready`` (readiness): every connection *in use* (with a consumer, or asked to
  open) is connected and the server has confirmed all its subscriptions.
  Connections nobody uses (``in_use: false``, still ``idle``) never make a
  report unready.

``in_use``, ``ever_connected`` and ``ready`` are derived from the other fields
when a producer does not give them (a test fake, an older JSON report), so every
report obeys the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ConnectionHealth", "HealthReport", "StateTransition"]


class StateTransition(BaseModel):
    """One recorded state change of a connection."""

    model_config = ConfigDict(frozen=True)

    state: str
    at: datetime
    error: str | None = None


class ConnectionHealth(BaseModel):
    """The health of one shared connection (one per credentials and endpoint).

    Attributes:
        kind: ``stock``, ``crypto``, ``option``, ``news`` or ``trading``.
        endpoint: the full WebSocket URL (never credentials).
        fingerprint: the masked key id of the account.
        state: ``idle``, ``connecting``, ``authenticating``, ``connected``,
            ``reconnecting``, ``closed`` or ``failed``.
        consumers: open subscriptions sharing this connection.
        subscriptions: per channel, how many symbols at least one consumer wants.
        messages_parsed: messages built into a model (once per message, only when
            a typed consumer wants one).
        messages_dropped: messages discarded by consumers' overflow policies.
        malformed: frames or elements from the server that could not be decoded.
        role: with ``sharing="redis"``: ``leader`` when this process holds the
            upstream socket, ``follower`` when it reads through Redis; ``None`` locally.
        leader: with ``sharing="redis"``: the identity (``host:pid:random``) of the
            process holding the upstream socket, when one is known.
        redis: with ``sharing="redis"``: ``up`` or ``down`` (this process's Redis link).
        lag_ms: with ``sharing="redis"``: smoothed delay in ms from the leader's
            publish to this process's receipt (wall clocks; includes skew across hosts).
        unpublished: with ``sharing="redis"``, on the leader: messages it read from
            its socket that Redis has not taken yet (trade updates are held until
            Redis acknowledges them); ``0`` elsewhere.
        limit_rejections: with ``sharing="redis"``: the ``406 connection limit
            exceeded`` replies the current leader's socket got since it took over
            (a previous leader's socket still holding the slot; the leader retries
            until it frees); ``None`` while no leader is known or locally.
        in_use: the connection has a consumer or was asked to open (it left
            ``idle``); ``False`` for a stream the application never used.
        ever_connected: the connection has reached ``connected`` at least once.
        subscriptions_pending: subscription changes the server has not confirmed
            yet ((channel, symbol) pairs awaiting an ack, plus changes in flight).
        ready: ``connected`` with no subscription pending. A report's ``ready``
            only looks at connections ``in_use``.

    ``healthy`` is never true for a connection in use that has never connected.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    endpoint: str
    fingerprint: str
    state: str
    state_since: datetime
    healthy: bool
    consumers: int
    subscriptions: dict[str, int]
    messages_received: int
    messages_delivered: int
    messages_parsed: int = 0
    messages_dropped: int
    malformed: int
    handler_errors: int
    reconnects: int
    last_message_at: datetime | None = None
    last_error: str | None = None
    transitions: list[StateTransition] = Field(default_factory=list)
    role: str | None = None
    leader: str | None = None
    redis: str | None = None
    lag_ms: float | None = None
    unpublished: int | None = None
    limit_rejections: int | None = None
    in_use: bool = False
    ever_connected: bool = False
    subscriptions_pending: int = 0
    ready: bool = False

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        """Fill ``in_use``, ``ever_connected`` when absent; compute ``ready``; bound ``healthy``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        state = _text(data.get("state"))
        if data.get("in_use") is None:
            data["in_use"] = bool(data.get("consumers")) or state not in ("", "idle")
        if data.get("ever_connected") is None:
            data["ever_connected"] = state == "connected" or _any_connected(
                data.get("transitions") or ()
            )
        pending = data.get("subscriptions_pending") or 0
        data["ready"] = state == "connected" and not pending
        if data["in_use"] is True and data["ever_connected"] is False:
            data["healthy"] = False
        return data


def _text(value: Any) -> str:
    """A state given as an enum member or a string, as its string value."""
    return str(getattr(value, "value", value) or "")


def _any_connected(transitions: Iterable[Any]) -> bool:
    for change in transitions:
        state = change.get("state") if isinstance(change, dict) else getattr(change, "state", None)
        if _text(state) == "connected":
            return True
    return False


class HealthReport(BaseModel):
    """Every connection a container (or registry) uses, with an overall verdict.

    ``healthy`` (the liveness verdict) is true when every connection is healthy:
    none has failed, is reconnecting or closed, and none in use is still waiting
    for its first connect. ``ready`` (the readiness verdict) is true when every
    connection in use is connected with all its subscriptions confirmed; unused
    connections are ignored, and a report without connections is ready::

        report = container.health()
        status = 200 if report.ready else 503
        body = report.model_dump_json()
    """

    model_config = ConfigDict(frozen=True)

    generated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    healthy: bool
    connections: list[ConnectionHealth]
    ready: bool = True

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        """Compute ``ready`` from the connections (it is never taken from the input)."""
        if not isinstance(data, dict) or not isinstance(data.get("connections"), list):
            return data
        data = dict(data)
        connections = [
            c if isinstance(c, ConnectionHealth) else ConnectionHealth.model_validate(c)
            for c in data["connections"]
        ]
        data["connections"] = connections
        data["ready"] = all(c.ready for c in connections if c.in_use)
        return data

    @classmethod
    def of(cls, connections: list[ConnectionHealth]) -> HealthReport:
        """Build a report from connection healths."""
        return cls(healthy=all(c.healthy for c in connections), connections=connections)
