"""Health reports: what every shared connection is doing, safe to publish.

No field ever holds a secret: accounts appear as masked ``fingerprint`` values::

    report = container.health()
    print(report.model_dump_json(indent=2))
    assert all(c.state == "connected" for c in report.connections)
"""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

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


class HealthReport(BaseModel):
    """Every connection a container (or registry) uses, with an overall verdict.

    ``healthy`` is true when no connection has failed or is reconnecting.
    """

    model_config = ConfigDict(frozen=True)

    generated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    healthy: bool
    connections: list[ConnectionHealth]

    @classmethod
    def of(cls, connections: list[ConnectionHealth]) -> HealthReport:
        """Build a report from connection healths."""
        return cls(healthy=all(c.healthy for c in connections), connections=connections)
