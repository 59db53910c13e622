"""Which inboxes want which (channel, symbol), and the fan-out of one decoded frame.

The hub keeps the membership (who holds what, what the server acknowledged);
the :class:`Router` keeps the index built from it and turns each batch of
messages into pushes, parsing a model once per message and only when a typed
consumer wants it::

    router = Router()
    router.add(inbox, ("quotes", "AAPL"))
    overflowed = router.dispatch([("quotes", "AAPL", raw)], on_malformed=print)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from alpaca_di.errors import ProtocolError
from alpaca_di.hub.inbox import Inbox, Item, Pair

__all__ = ["Router"]

_UNPARSED: Any = object()  # the model of a message no model can be built from
_Route = tuple[tuple[Inbox, ...], bool]  # the targets, and whether one wants a model


class Router:
    """The index of a hub's inboxes by channel and symbol, with a route cache. Loop-only."""

    def __init__(self) -> None:
        # alpaca-py (and pandas) load with the first hub, never on its loop at the
        # first message, and not at all for an application that imports alpaca-di only.
        from alpaca_di.protocol.models import parse

        self._parse = parse
        self._index: dict[str, dict[str, set[Inbox]]] = {}
        self._routes: dict[Pair, _Route] = {}
        # One tuple object per distinct set of targets: dispatch() tells by identity
        # that every message of a frame goes to the same consumers.
        self._target_sets: dict[tuple[Inbox, ...], tuple[Inbox, ...]] = {}
        self.unrouted = 0
        self.parsed = 0  # models built (any thread may read it)

    def add(self, inbox: Inbox, pair: Pair) -> None:
        """Route ``pair`` to ``inbox`` too."""
        self._index.setdefault(pair[0], {}).setdefault(pair[1], set()).add(inbox)

    def remove(self, inbox: Inbox, pair: Pair) -> None:
        """Stop routing ``pair`` to ``inbox``."""
        holders = self._index.get(pair[0], {}).get(pair[1])
        if holders is not None:
            holders.discard(inbox)
            if not holders:
                del self._index[pair[0]][pair[1]]

    def changed(self) -> None:
        """Forget cached routes (after any add or remove)."""
        self._routes.clear()
        self._target_sets.clear()

    def clear(self) -> None:
        """Route nothing to anyone."""
        self._index.clear()
        self.changed()

    def symbols_per_channel(self) -> dict[str, int]:
        """How many symbols at least one inbox wants, per channel (any thread)."""
        return {
            channel: sum(1 for holders in list(symbols.values()) if holders)
            for channel, symbols in list(self._index.items())
        }

    def dispatch(
        self,
        messages: list[tuple[str, str, dict[str, Any]]],
        on_malformed: Callable[[str], None],
    ) -> list[Inbox]:
        """Push every message to the inboxes that want it; returns those that overflowed."""
        routes = self._routes
        entries: list[tuple[tuple[Inbox, ...], Item, Any]] = []
        shared: tuple[Inbox, ...] | None = None
        uniform = True
        parsed = 0
        for channel, symbol, raw in messages:
            route = routes.get((channel, symbol))
            if route is None:
                route = self._route(channel, symbol, raw)
            targets, needs_model = route
            if not targets:
                self.unrouted += 1
                continue
            raw_item: Item = (channel, symbol, raw)
            item = raw_item
            if needs_model:
                try:
                    item = (channel, symbol, self._parse(channel, symbol, raw))
                    parsed += 1
                except ProtocolError as exc:
                    # No model can be built; raw subscribers still get the message.
                    on_malformed(str(exc))
                    item = _UNPARSED
                    uniform = False
            if shared is None:
                shared = targets
            elif targets is not shared:
                uniform = False
            entries.append((targets, raw_item, item))
        self.parsed += parsed
        if shared is None:
            return []
        if uniform:
            # The common case: every message of the frame goes to the same consumers.
            # One list per form, shared by their inboxes (push never mutates it), so
            # the work per message no longer grows with the number of consumers.
            models = [entry[2] for entry in entries]
            raws = [entry[1] for entry in entries] if any(s.raw for s in shared) else models
            return [sub for sub in shared if not sub.push(raws if sub.raw else models)]
        batches: dict[Inbox, list[Item]] = {}
        for targets, raw_item, item in entries:
            for sub in targets:
                if item is _UNPARSED and not sub.raw:
                    continue
                batch = batches.get(sub)
                if batch is None:
                    batches[sub] = batch = []
                batch.append(raw_item if sub.raw else item)
        return [sub for sub, batch in batches.items() if not sub.push(batch)]

    def _route(self, channel: str, symbol: str, raw: Mapping[str, Any]) -> _Route:
        by_symbol = self._index.get(channel)
        if not by_symbol:
            return (), False
        if channel == "news":  # routed by the article's symbols; not cached
            wanted = [s for s in (raw.get("symbols") or ()) if isinstance(s, str)] + ["*"]
            found: dict[Inbox, None] = {}
            for wanted_symbol in wanted:
                found.update(dict.fromkeys(by_symbol.get(wanted_symbol, ())))
            targets = tuple(found)
            return targets, any(not sub.raw for sub in targets)
        found = dict.fromkeys(by_symbol.get(symbol, ()))
        found.update(dict.fromkeys(by_symbol.get("*", ())))
        targets = tuple(found)
        targets = self._target_sets.setdefault(targets, targets)
        route = (targets, any(not sub.raw for sub in targets))
        self._routes[(channel, symbol)] = route
        return route
