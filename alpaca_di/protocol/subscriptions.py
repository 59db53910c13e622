"""Reference-counted subscriptions and the deltas to send on the wire.

Many consumers share one connection. Each ``(channel, symbol)`` has a count of
consumers; the wire needs a subscribe when a count leaves 0 and an unsubscribe when
it returns to 0. Changes made between two :meth:`SubscriptionState.take_delta`
calls are coalesced, so add-then-remove sends nothing::

    state = SubscriptionState()
    state.add("quotes", ["AAPL", "MSFT"])
    state.take_delta()       # ({"quotes": ["AAPL", "MSFT"]}, {})
    state.add("quotes", ["AAPL"])    # second consumer of AAPL: nothing to send
    state.remove("quotes", ["MSFT"])
    state.take_delta()       # ({}, {"quotes": ["MSFT"]})

Channels are opaque strings here: the codec maps names to wire keys. Because
``corrections`` and ``cancel_errors`` travel as ``trades`` on the wire, a caller that
mixes them with ``trades`` should key the state by
:func:`~alpaca_di.protocol.channels.wire_channel` so that removing the last ``trades``
consumer does not unsubscribe symbols still wanted for corrections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["SubscriptionState"]

_Delta = dict[str, list[str]]


def _symbols_list(channel: str, symbols: Iterable[str]) -> list[str]:
    if isinstance(symbols, str):
        raise TypeError(
            f"symbols of {channel!r} must be an iterable of str, not one str (write [{symbols!r}])"
        )
    return list(symbols)


class SubscriptionState:
    """What consumers want (counts) versus what the server has (wire), per connection.

    Not thread-safe: one owner (the connection's loop) calls it.

    ::

        state = SubscriptionState()
        state.add("trades", ["AAPL"])
        subscribe, unsubscribe = state.take_delta()   # send these
        ...                                           # connection lost:
        state.reset_wire()
        state.restore()                               # after reconnect: send it all

    Cost: :meth:`add`, :meth:`remove` and :meth:`reject` are O(symbols passed);
    :meth:`take_delta` is O(keys changed since the last call), whatever the total.
    Invariant: after ``take_delta()``, ``wire() == desired()``.
    """

    __slots__ = ("_counts", "_dirty", "_wire")

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}
        self._wire: dict[str, set[str]] = {}
        # Ordered set of keys whose count crossed 0 since the last delta.
        self._dirty: dict[tuple[str, str], None] = {}

    def __repr__(self) -> str:
        desired = sum(len(symbols) for symbols in self._counts.values())
        wire = sum(len(symbols) for symbols in self._wire.values())
        return f"<SubscriptionState desired={desired} wire={wire} pending={len(self._dirty)}>"

    def add(self, channel: str, symbols: Iterable[str]) -> None:
        """Count one more consumer of each symbol (callers dedupe per consumer).

        ::

            state.add("quotes", ["AAPL", "*"])
        """
        items = _symbols_list(channel, symbols)
        if not items:
            return
        counts = self._counts.setdefault(channel, {})
        dirty = self._dirty
        for symbol in items:
            count = counts.get(symbol, 0)
            counts[symbol] = count + 1
            if count == 0:
                dirty[(channel, symbol)] = None

    def remove(self, channel: str, symbols: Iterable[str]) -> None:
        """Count one consumer fewer of each symbol.

        All or nothing: if any symbol would go below zero, ``ValueError`` is raised
        and no count changes::

            state.remove("quotes", ["AAPL"])
        """
        items = _symbols_list(channel, symbols)
        if not items:
            return
        counts = self._counts.get(channel, {})
        wanted = Counter(items)
        for symbol, times in wanted.items():
            have = counts.get(symbol, 0)
            if have < times:
                raise ValueError(
                    f"cannot remove {channel}:{symbol!r} {times} time(s): "
                    f"only {have} subscription(s) counted"
                )
        dirty = self._dirty
        for symbol, times in wanted.items():
            left = counts[symbol] - times
            if left:
                counts[symbol] = left
            else:
                del counts[symbol]
                dirty[(channel, symbol)] = None
        if not counts:
            self._counts.pop(channel, None)

    def count(self, channel: str, symbol: str) -> int:
        """How many consumers hold ``(channel, symbol)``; 0 if none.

        ::

            state.count("quotes", "AAPL")
        """
        return self._counts.get(channel, {}).get(symbol, 0)

    def desired(self) -> dict[str, frozenset[str]]:
        """Channels with at least one counted symbol, and those symbols.

        ::

            state.desired()   # {"quotes": frozenset({"AAPL"})}
        """
        return {channel: frozenset(counts) for channel, counts in self._counts.items()}

    def wire(self) -> dict[str, frozenset[str]]:
        """What the server was told (subscribes sent minus unsubscribes sent).

        ::

            state.wire() == state.desired()   # True right after take_delta()
        """
        return {channel: frozenset(symbols) for channel, symbols in self._wire.items()}

    def take_delta(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Return ``(to_subscribe, to_unsubscribe)`` and mark them as sent.

        Only keys whose count crossed zero since the last call are examined; keys
        that went up and back down in between cancel out. Channels with nothing to
        send are absent, so both dicts are empty when there is nothing to do::

            subscribe, unsubscribe = state.take_delta()
            if subscribe:
                await ws.send(protocol.subscribe_message(subscribe))
            if unsubscribe:
                await ws.send(protocol.unsubscribe_message(unsubscribe))
        """
        subscribe: _Delta = {}
        unsubscribe: _Delta = {}
        if not self._dirty:
            return subscribe, unsubscribe
        counts = self._counts
        wire = self._wire
        for channel, symbol in self._dirty:
            wanted = symbol in counts.get(channel, ())
            on_wire = wire.get(channel)
            sent = on_wire is not None and symbol in on_wire
            if wanted and not sent:
                if on_wire is None:
                    on_wire = wire[channel] = set()
                on_wire.add(symbol)
                subscribe.setdefault(channel, []).append(symbol)
            elif sent and not wanted:
                assert on_wire is not None
                on_wire.discard(symbol)
                if not on_wire:
                    del wire[channel]
                unsubscribe.setdefault(channel, []).append(symbol)
        self._dirty = {}
        return subscribe, unsubscribe

    def restore(self) -> dict[str, list[str]]:
        """After a reconnect: the wire becomes the desired set; return all of it.

        The new server session starts empty, so everything desired is sent in one
        subscribe and pending changes are folded in::

            full = state.restore()
            if full:
                await ws.send(protocol.subscribe_message(full))
        """
        self._dirty = {}
        self._wire = {channel: set(counts) for channel, counts in self._counts.items()}
        return {channel: list(counts) for channel, counts in self._counts.items()}

    def reset_wire(self) -> None:
        """The connection was lost: the server holds nothing now (counts are kept).

        Every desired key becomes pending, so either :meth:`restore` or the next
        :meth:`take_delta` brings a new session up to date (O(total), once per
        disconnect)::

            state.reset_wire()
            state.wire()   # {}
        """
        self._wire = {}
        dirty = self._dirty
        for channel, counts in self._counts.items():
            for symbol in counts:
                dirty[(channel, symbol)] = None

    def reject(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Roll back ``(channel, symbol)`` pairs the server refused (405 symbol limit).

        The server kept its previous state, so the pairs leave the wire, and their
        counts drop to 0 (the consumers that asked are told by the caller)::

            state.reject([("quotes", "TSLA")])
            state.count("quotes", "TSLA")   # 0
        """
        for channel, symbol in pairs:
            counts = self._counts.get(channel)
            if counts is not None and counts.pop(symbol, None) is not None and not counts:
                del self._counts[channel]
            on_wire = self._wire.get(channel)
            if on_wire is not None:
                on_wire.discard(symbol)
                if not on_wire:
                    del self._wire[channel]
            self._dirty.pop((channel, symbol), None)
