"""The Redis wire schema of the scale-out, shared by the leader and its followers.

One home for what both sides must agree on: the key and channel names of a
group, the encodings of demand records, market-data batches, trade-update
stream entries (with their epoch and sequence fields), the leader's status and
the error records it carries.

Per (account, endpoint) *group*, with ``P`` the prefix and ``T`` the account tag
(:func:`account_tag`: an HMAC of the key id and endpoint keyed by the secret, so
no key holds a secret or a raw key id)::

    P:{T}:leader          lock: the leader's identity (SET NX PX, renewed by Lua)
    P:{T}:epoch           fencing epoch of the latest leadership term
    P:{T}:status          the leader's LeaderStatus (upstream state, ack, rejections)
    P:{T}:members         hash: member id -> registration time
    P:{T}:demand:<member> a member's wanted (channel, symbol) pairs, expiring (heartbeat)
    P:{T}:wants:<member>  the bar pairs of that demand it wants backfilled after a gap
    P:{T}:gap:<epoch>:<n> the leader's backfill of its n-th gap of that term (GapRecord, TTL)
    P:{T}:updates         stream of trade updates (XADD MAXLEN ~), read with XREAD
    P:{T}:cursor:<id>     a reader's last stream id, so a restarted reader resumes
    P:{T}:ch:data         pub/sub: msgpack batches [epoch, sent_ms, [[channel, symbol, raw]...]]
    P:{T}:ch:status       pub/sub: LeaderStatus, on every change and every renewal
    P:{T}:ch:demand       pub/sub: "a member's demand changed" (wakes the leader)

The ``{T}`` hash tag keeps a group's keys in one Redis Cluster slot.

Example::

    keys = SharingKeys("alpaca-di", account_tag(creds, url))
    payload = encode_batch(7, [("quotes", "AAPL", {"T": "q", "S": "AAPL"})])
    epoch, sent_ms, messages = decode_batch(payload)
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import msgpack

from alpaca_di.credentials import Credentials
from alpaca_di.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionClosedError,
    InsufficientSubscriptionError,
    ProtocolError,
    ServerError,
    error_for_code,
)

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

__all__ = [
    "SLOT_HELD",
    "GapRecord",
    "LeaderStatus",
    "Pair",
    "SharingKeys",
    "account_tag",
    "decode_batch",
    "decode_demand",
    "decode_update",
    "decode_update_entry",
    "decode_wants",
    "demand_channel_pattern",
    "encode_batch",
    "encode_demand",
    "encode_update",
    "encode_wants",
    "error_from_record",
    "error_record",
    "is_permanent",
    "status_channel_pattern",
    "stream_position",
    "tag_of_channel",
    "update_entry",
]

Pair = tuple[str, str]
"""A (channel, symbol) pair, as demand records and rejections carry it."""

_TAG_CONTEXT = b"alpaca-di/sharing/v1"


@dataclass(frozen=True)
class SharingKeys:
    """The Redis key and channel names of one (account, endpoint) group.

    Example::

        keys = SharingKeys("alpaca-di", account_tag(creds, url))
        keys.leader          # 'alpaca-di:{3f2a...}:leader'
    """

    prefix: str
    tag: str

    @property
    def base(self) -> str:
        """Common start of every name of the group (with the cluster hash tag)."""
        return f"{self.prefix}:{{{self.tag}}}"

    @property
    def leader(self) -> str:
        """The leader lock."""
        return f"{self.base}:leader"

    @property
    def epoch(self) -> str:
        """The fencing epoch counter."""
        return f"{self.base}:epoch"

    @property
    def status(self) -> str:
        """The leader's latest :class:`LeaderStatus` (expires with the lock)."""
        return f"{self.base}:status"

    @property
    def members(self) -> str:
        """Hash of registered members."""
        return f"{self.base}:members"

    def demand(self, member: str) -> str:
        """One member's demand (expiring)."""
        return f"{self.base}:demand:{member}"

    def wants(self, member: str) -> str:
        """The bar pairs one member wants backfilled (expiring with its demand)."""
        return f"{self.base}:wants:{member}"

    def gap(self, epoch: int, seq: int) -> str:
        """The leader's :class:`GapRecord` of gap ``seq`` of term ``epoch`` (expiring)."""
        return f"{self.base}:gap:{epoch}:{seq}"

    @property
    def updates(self) -> str:
        """The trade-update stream."""
        return f"{self.base}:updates"

    def cursor(self, consumer: str) -> str:
        """A reader's saved stream position."""
        return f"{self.base}:cursor:{consumer}"

    @property
    def data_channel(self) -> str:
        """Pub/sub channel of market-data batches."""
        return f"{self.base}:ch:data"

    @property
    def status_channel(self) -> str:
        """Pub/sub channel of leader status."""
        return f"{self.base}:ch:status"

    @property
    def demand_channel(self) -> str:
        """Pub/sub channel members use to wake the leader."""
        return f"{self.base}:ch:demand"


def demand_channel_pattern(prefix: str) -> str:
    """The ``PSUBSCRIBE`` pattern of every group's demand channel under ``prefix``::

    demand_channel_pattern("alpaca-di")    # 'alpaca-di:*:ch:demand'
    """
    return _channel_pattern(prefix, "demand")


def status_channel_pattern(prefix: str) -> str:
    """The ``PSUBSCRIBE`` pattern of every group's status channel under ``prefix``::

    status_channel_pattern("alpaca-di")    # 'alpaca-di:*:ch:status'
    """
    return _channel_pattern(prefix, "status")


def _channel_pattern(prefix: str, name: str) -> str:
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return f"{escaped}:*:ch:{name}"


def tag_of_channel(channel: bytes) -> str | None:
    """The group tag inside a channel name (the ``{T}`` hash tag), or ``None``::

    tag_of_channel(b"alpaca-di:{3f2a}:ch:demand")    # '3f2a'
    """
    text = channel.decode(errors="replace")
    start = text.rfind("{")
    end = text.find("}", start)
    return text[start + 1 : end] if start >= 0 and end > start else None


def account_tag(credentials: Credentials, endpoint: str) -> str:
    """The group tag of (credentials, endpoint): safe to put in Redis key names.

    An HMAC-SHA256 of the key id and endpoint, keyed by the secret: it reveals
    neither, equal key pairs on the same endpoint get the same tag in every
    process, and a process holding a wrong secret lands in a group of its own
    (where its own leader gets the ``402``)::

        account_tag(Credentials("PKTEST", "s3cret"), "wss://stream.data.alpaca.markets/v2/iex")
    """
    message = b"\0".join((_TAG_CONTEXT, _utf8(credentials.key_id), _utf8(endpoint)))
    # No local variable holds the secret: tracebacks may be rendered with locals.
    return hmac.new(
        _utf8(credentials.secret.get_secret_value()), message, hashlib.sha256
    ).hexdigest()[:24]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# -- wire encodings ------------------------------------------------------------------------


def encode_demand(version: int, pairs: list[Pair]) -> bytes:
    """Encode a member's demand: its version and its (channel, symbol) pairs::

    encode_demand(3, [("quotes", "AAPL")])
    """
    return cast(bytes, msgpack.packb([version, sorted(pairs)]))


def decode_demand(data: bytes) -> tuple[int, set[Pair]]:
    """Decode :func:`encode_demand`; raises ``ProtocolError`` on garbage::

    decode_demand(encode_demand(3, [("quotes", "AAPL")]))   # (3, {("quotes", "AAPL")})
    """
    try:
        version, items = msgpack.unpackb(data)
        return int(version), {(str(channel), str(symbol)) for channel, symbol in items}
    except Exception as exc:
        raise ProtocolError(f"undecodable demand record: {type(exc).__name__}") from None


def encode_wants(pairs: list[Pair]) -> bytes:
    """Encode the bar pairs a member wants backfilled (a record of its own, next to its
    demand, so a leader that predates backfill reads the demand unchanged)::

    encode_wants([("bars", "AAPL")])
    """
    return cast(bytes, msgpack.packb(sorted(pairs)))


def decode_wants(data: bytes) -> set[Pair]:
    """Decode :func:`encode_wants`; raises ``ProtocolError`` on garbage."""
    try:
        return {(str(channel), str(symbol)) for channel, symbol in msgpack.unpackb(data)}
    except Exception as exc:
        raise ProtocolError(f"undecodable backfill wants: {type(exc).__name__}") from None


def encode_batch(epoch: int, messages: list[Any]) -> bytes:
    """Encode market-data messages ``[(channel, symbol, raw), ...]`` for pub/sub.

    msgpack Timestamps inside ``raw`` survive the round trip::

        encode_batch(7, [("quotes", "AAPL", {"T": "q", "S": "AAPL"})])
    """
    return cast(bytes, msgpack.packb([epoch, time.time() * 1000.0, messages]))


def decode_batch(data: bytes) -> tuple[int, float, list[Any]]:
    """Decode :func:`encode_batch`: ``(epoch, sent_ms, messages)``; ``ProtocolError`` on garbage."""
    try:
        epoch, sent_ms, messages = msgpack.unpackb(data)
    except Exception as exc:
        raise ProtocolError(f"undecodable data batch: {type(exc).__name__}") from None
    if not isinstance(epoch, int) or not isinstance(messages, list):
        raise ProtocolError("data batch has the wrong shape")
    return epoch, float(sent_ms), messages


def encode_update(channel: str, symbol: str, raw: Mapping[str, Any]) -> bytes:
    """Encode one trade update for the stream (the entry's ``m`` field)::

    encode_update("trade_updates", "AAPL", {"event": "fill", ...})
    """
    return cast(bytes, msgpack.packb([channel, symbol, raw]))


def decode_update(data: bytes) -> list[Any]:
    """Decode :func:`encode_update`: ``[channel, symbol, raw]``; ``ProtocolError`` on garbage."""
    try:
        item = msgpack.unpackb(data)
    except Exception as exc:
        raise ProtocolError(f"undecodable trade update: {type(exc).__name__}") from None
    if not isinstance(item, list) or len(item) != 3 or not isinstance(item[2], dict):
        raise ProtocolError("trade update has the wrong shape")
    return item


def update_entry(
    epoch: int, seq: int, channel: str, symbol: str, raw: Mapping[str, Any]
) -> dict[FieldT, EncodableT]:
    """The fields of one trade-update stream entry (``XADD``).

    ``m`` is the update (:func:`encode_update`); ``e`` and ``n`` are the leader's
    epoch and its sequence number within that term, so a reader recognises an
    entry a leader appended twice (it retries an ``XADD`` whose reply it lost)::

        update_entry(7, 1, "trade_updates", "AAPL", {"event": "fill"})
    """
    return {"m": encode_update(channel, symbol, raw), "e": str(epoch), "n": str(seq)}


def decode_update_entry(fields: Mapping[bytes, bytes] | None) -> tuple[int, int, list[Any]]:
    """Decode :func:`update_entry` as read back: ``(epoch, seq, [channel, symbol, raw])``.

    Raises:
        ProtocolError: no payload, or an undecodable one.
        ValueError: an epoch or sequence field that is not a number.
    """
    payload = fields.get(b"m") if fields else None
    if fields is None or payload is None:
        raise ProtocolError("trade-update entry without a payload")
    epoch, seq = int(fields.get(b"e", b"0")), int(fields.get(b"n", b"0"))
    return epoch, seq, decode_update(payload)


def stream_position(entry_id: str) -> tuple[int, int]:
    """A Redis stream id ``"<ms>-<seq>"`` as a comparable pair::

    stream_position("1700000000000-3") < stream_position("1700000000001-0")
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


SLOT_HELD = (
    "a previous leader's socket may still hold the slot (a frozen or partitioned "
    "process); the leader retries until it frees"
)
"""Why a leader's socket gets ``406 connection limit exceeded`` after a takeover."""


def is_permanent(error: BaseException) -> bool:
    """True for an upstream error that retrying cannot heal (bad keys 402, no plan 409 ...).

    A follower fails with its leader only for these; any other leader state
    (a 406 while an old socket holds the slot, a drop) is mirrored as transient::

        is_permanent(AuthenticationError(402, "auth failed"))           # True
        is_permanent(ConnectionLimitError(406, "connection limit exceeded"))  # False
    """
    return isinstance(
        error, (AuthenticationError, InsufficientSubscriptionError, ConfigurationError)
    )


def error_record(error: BaseException | None) -> tuple[str, int | None, str] | None:
    """``(type name, Alpaca code or None, message)`` of an upstream error, for followers.

    Example::

        error_record(AuthenticationError(402, "auth failed"))
        # ('AuthenticationError', 402, 'auth failed')
    """
    if error is None:
        return None
    if isinstance(error, ServerError):
        return (type(error).__name__, error.code, error.server_message)
    return (type(error).__name__, None, str(error))


def error_from_record(
    record: tuple[str, int | None, str] | None, *, feed: str | None = None
) -> BaseException:
    """Rebuild the exception a leader reported (:func:`error_record`).

    Example::

        error_from_record(("AuthenticationError", 402, "auth failed"))  # AuthenticationError
    """
    if record is None:
        return ConnectionClosedError("the shared upstream connection failed")
    name, code, message = record
    if code is not None:
        return error_for_code(code, message, feed=feed)
    if name == "ConfigurationError":
        return ConfigurationError(message)
    return ConnectionClosedError(f"the shared upstream connection failed: {name}: {message}")


@dataclass(frozen=True)
class LeaderStatus:
    """What the leader of a group publishes about its upstream socket.

    Attributes:
        leader: the leader's identity (``host:pid:random``).
        epoch: the fencing epoch of its term; followers ignore older epochs.
        state: the upstream :class:`ConnectionState` value, or ``"gone"`` when the
            leader stepped down.
        ack: the server's confirmed subscription state (channel -> symbols).
        rejected: ``(channel, symbol, code, message)`` the server refused (405).
        error: the upstream's last error (:func:`error_record`) while ``state`` is
            not ``connected``: fatal when ``failed``, else what it is retrying.
        seen: member id -> the version of its demand the leader has applied; a
            member trusts ``ack`` for its own pairs only once its latest version
            is seen.
        limit_rejections: the 406 replies the leader's socket got this term (a
            previous leader's socket holding the slot).
        gap: how many times this term the leader's socket was lost and its
            subscriptions confirmed again: a follower that sees it grow had a gap,
            even if it never saw a status saying ``reconnecting``.
        filled: the last gap whose :class:`GapRecord` the leader has written.

    Example::

        status = LeaderStatus("web-1:42:ab12cd", 7, "connected", {"quotes": ("AAPL",)})
        LeaderStatus.decode(status.encode()) == status
    """

    leader: str
    epoch: int
    state: str
    ack: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rejected: tuple[tuple[str, str, int, str], ...] = ()
    error: tuple[str, int | None, str] | None = None
    seen: Mapping[str, int] = field(default_factory=dict)
    limit_rejections: int = 0
    gap: int = 0
    filled: int = 0

    def encode(self) -> bytes:
        """msgpack bytes of this status."""
        return cast(
            bytes,
            msgpack.packb(
                {
                    "v": 1,
                    "leader": self.leader,
                    "epoch": self.epoch,
                    "state": self.state,
                    "ack": {channel: list(symbols) for channel, symbols in self.ack.items()},
                    "rejected": [list(item) for item in self.rejected],
                    "error": list(self.error) if self.error else None,
                    "seen": dict(self.seen),
                    "limited": self.limit_rejections,
                    "gap": self.gap,
                    "filled": self.filled,
                }
            ),
        )

    @classmethod
    def decode(cls, data: bytes) -> LeaderStatus:
        """Parse :meth:`encode` output; ``ProtocolError`` on garbage."""
        try:
            record = msgpack.unpackb(data)
            error = record.get("error")
            return cls(
                leader=str(record["leader"]),
                epoch=int(record["epoch"]),
                state=str(record["state"]),
                ack={str(c): tuple(str(s) for s in syms) for c, syms in record["ack"].items()},
                rejected=tuple(
                    (str(c), str(s), int(code), str(text))
                    for c, s, code, text in record.get("rejected") or ()
                ),
                error=(str(error[0]), error[1], str(error[2])) if error else None,
                seen={str(m): int(v) for m, v in (record.get("seen") or {}).items()},
                limit_rejections=int(record.get("limited") or 0),
                gap=int(record.get("gap") or 0),
                filled=int(record.get("filled") or 0),
            )
        except Exception as exc:
            raise ProtocolError(f"undecodable leader status: {type(exc).__name__}") from None


@dataclass(frozen=True)
class GapRecord:
    """The leader's backfill of one gap of its socket, for every follower to read.

    Attributes:
        bars: per wanted (channel, symbol), the window start the leader fetched
            from (just after the last bar it published) and the bars, ascending,
            in the stream's keys (``t`` a msgpack Timestamp).
        errors: per (channel, symbol), why its fetch failed.
        truncated: the pairs whose window held more bars than one fetch returns.

    Example::

        record = GapRecord({("bars", "AAPL"): (start, [{"t": stamp, "c": 1.0}])})
        GapRecord.decode(record.encode()) == record
    """

    bars: Mapping[Pair, tuple[msgpack.Timestamp, list[dict[str, Any]]]] = field(
        default_factory=dict
    )
    errors: Mapping[Pair, str] = field(default_factory=dict)
    truncated: frozenset[Pair] = frozenset()

    def encode(self) -> bytes:
        """msgpack bytes of this record."""
        return cast(
            bytes,
            msgpack.packb(
                {
                    "v": 1,
                    "bars": [[c, s, start, rows] for (c, s), (start, rows) in self.bars.items()],
                    "errors": [[c, s, why] for (c, s), why in self.errors.items()],
                    "truncated": sorted(self.truncated),
                }
            ),
        )

    @classmethod
    def decode(cls, data: bytes) -> GapRecord:
        """Parse :meth:`encode` output; ``ProtocolError`` on garbage."""
        try:
            record = msgpack.unpackb(data)
            bars = {}
            for channel, symbol, start, rows in record["bars"]:
                if not isinstance(start, msgpack.Timestamp) or not isinstance(rows, list):
                    raise TypeError("bars entry")
                bars[(str(channel), str(symbol))] = (start, [dict(row) for row in rows])
            return cls(
                bars=bars,
                errors={(str(c), str(s)): str(why) for c, s, why in record["errors"]},
                truncated=frozenset((str(c), str(s)) for c, s in record["truncated"]),
            )
        except Exception as exc:
            raise ProtocolError(f"undecodable gap record: {type(exc).__name__}") from None
