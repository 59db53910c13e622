"""Which inboxes want which (channel, symbol), and the fan-out of one decoded frame.

The hub keeps the membership (who holds what, what the server acknowledged);
the :class:`Router` keeps the index built from it and turns each batch of
messages into pushes. Each form a consumer can ask for (alpaca-py ``model``,
``struct``, ``raw`` dict) is built at most once per message, only when some
consumer the message reaches wants it, and shared by all of them::

    router = Router()
    router.add(inbox, ("quotes", "AAPL"))
    router.forms()             # frozenset({"raw"}): what the decoder must build
    overflowed = router.dispatch([("quotes", "AAPL", raw)], on_malformed=print)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alpaca_di.errors import ProtocolError
from alpaca_di.hub.inbox import Inbox, Item, Pair

__all__ = ["Router"]

_UNPARSED: Any = object()  # the model (or struct) of a message none can be built from
# The targets, and whether one wants a model, a struct.
_Route = tuple[tuple[Inbox, ...], bool, bool]
# Where an inbox's item sits in a dispatch entry (targets, raw, model, struct).
_SLOT = {"raw": 1, "model": 2, "struct": 3}
_RAW_FORMS = frozenset({"raw"})


def _struct_of(channel: str, raw: Any) -> Any:
    """The struct of a message that came as a dict only (a fake's, a follower's)."""
    from alpaca_di.protocol.structs import from_raw

    return from_raw(channel, raw)


_NOBODY: frozenset[Inbox] = frozenset()


def _any_form(index: int, raw: Any, structs: list[Any] | None, sources: list[Any] | None) -> Any:
    """The message in a form it came in (routing news reads its ``symbols``)."""
    if raw is not None:
        return raw
    for column in (structs, sources):
        if column is not None and column[index] is not None:
            return column[index]
    return None


class Router:
    """The index of a hub's inboxes by channel and symbol, with a route cache. Loop-only.

    Compact with many subscriptions to the same symbols: the holders of a
    (channel, symbol) are a frozenset shared by every symbol held by exactly the
    same inboxes (10,000 symbols x 100 subscriptions: one set, not 10,000), and
    each distinct pair is one tuple object (:meth:`intern`), however many
    subscriptions hold it.
    """

    def __init__(self) -> None:
        # alpaca-py (and pandas) load with the first hub, never on its loop at the
        # first message, and not at all for an application that imports alpaca-di only.
        from alpaca_di.protocol.models import build, parse

        self._parse = parse
        self._build = build
        self._index: dict[str, dict[str, frozenset[Inbox]]] = {}
        # Each distinct set of holders -> [the one shared object, how many symbols use it].
        self._holder_sets: dict[frozenset[Inbox], list[Any]] = {}
        self._pairs: dict[Pair, Pair] = {}
        self._routes: dict[Pair, _Route] = {}
        # One tuple object per distinct set of targets: dispatch() tells by identity
        # that every message of a frame goes to the same consumers.
        self._target_sets: dict[tuple[Inbox, ...], tuple[Inbox, ...]] = {}
        self._members: dict[Inbox, int] = {}  # inbox -> how many pairs route to it
        self.unrouted = 0
        self.parsed = 0  # models built (any thread may read it)

    def intern(self, pair: Pair) -> Pair:
        """The one tuple object of ``pair`` (thread-safe): subscriptions share it.

        ::

            router.intern(("quotes", "AAPL")) is router.intern(("quotes", "AAPL"))   # True
        """
        return self._pairs.setdefault(pair, pair)

    def add(self, inbox: Inbox, *pairs: Pair) -> None:
        """Route ``pairs`` to ``inbox`` too."""
        # Symbols held by the same inboxes share one set before and after: each
        # distinct old set is joined with ``inbox`` once per call, not once per symbol.
        joined: dict[frozenset[Inbox], frozenset[Inbox]] = {}
        added = 0
        for channel, symbol in pairs:
            by_symbol = self._index.setdefault(channel, {})
            holders = by_symbol.get(symbol, _NOBODY)
            if inbox in holders:
                continue
            new = joined.get(holders)
            if new is None:
                new = joined[holders] = holders | {inbox}
            by_symbol[symbol] = self._share(new)
            self._unshare(holders)
            added += 1
        if added:
            self._members[inbox] = self._members.get(inbox, 0) + added

    def remove(self, inbox: Inbox, *pairs: Pair) -> None:
        """Stop routing ``pairs`` to ``inbox``."""
        left_over: dict[frozenset[Inbox], frozenset[Inbox]] = {}
        removed = 0
        for pair in pairs:
            by_symbol = self._index.get(pair[0], {})
            holders = by_symbol.get(pair[1], _NOBODY)
            if inbox not in holders:
                continue
            rest = left_over.get(holders)
            if rest is None:
                rest = left_over[holders] = holders - {inbox}
            if rest:
                by_symbol[pair[1]] = self._share(rest)
            else:
                del by_symbol[pair[1]]
                self._pairs.pop(pair, None)  # nobody holds it: its tuple may go
            self._unshare(holders)
            removed += 1
        if removed:
            left = self._members[inbox] - removed
            if left:
                self._members[inbox] = left
            else:
                del self._members[inbox]

    def _share(self, holders: frozenset[Inbox]) -> frozenset[Inbox]:
        """The shared frozenset equal to ``holders``, counted once more."""
        entry = self._holder_sets.get(holders)
        if entry is None:
            self._holder_sets[holders] = [holders, 1]
            return holders
        entry[1] += 1
        shared: frozenset[Inbox] = entry[0]
        return shared

    def _unshare(self, holders: frozenset[Inbox]) -> None:
        if not holders:
            return
        entry = self._holder_sets[holders]
        entry[1] -= 1
        if not entry[1]:
            del self._holder_sets[holders]

    def changed(self) -> None:
        """Forget cached routes (after any add or remove)."""
        self._routes.clear()
        self._target_sets.clear()

    def clear(self) -> None:
        """Route nothing to anyone."""
        self._index.clear()
        self._holder_sets.clear()
        self._pairs.clear()
        self._members.clear()
        self.changed()

    def forms(self) -> frozenset[str]:
        """What the decoder must build for the inboxes routed to now.

        The consumers' forms: ``"raw"`` dicts, ``"struct"``s, ``"model"`` sources
        (what alpaca-py models are built from); ``{"raw"}`` when nobody is routed to::

            router.forms()   # frozenset({"struct"}) with only struct consumers
        """
        wanted = {inbox.form for inbox in self._members}
        return frozenset(wanted) if wanted else _RAW_FORMS

    def symbols_per_channel(self) -> dict[str, int]:
        """How many symbols at least one inbox wants, per channel (any thread)."""
        return {
            channel: sum(1 for holders in list(symbols.values()) if holders)
            for channel, symbols in list(self._index.items())
        }

    def dispatch(
        self,
        messages: list[tuple[str, str, Any]],
        on_malformed: Callable[[str], None],
        structs: list[Any] | None = None,
        sources: list[Any] | None = None,
    ) -> list[Inbox]:
        """Push every message to the inboxes that want it; returns those that overflowed.

        ``structs`` and ``sources`` (model sources), when the decoder built them,
        are parallel to ``messages`` (``None`` for a message that has none); without
        them structs and models are made from the dicts.
        """
        routes = self._routes
        build, parse = self._build, self._parse
        entries: list[tuple[Any, Any, Any, Any]] = []  # (targets, raw, model, struct)
        shared: tuple[Inbox, ...] | None = None
        uniform = True
        parsed = 0
        for index, (channel, symbol, raw) in enumerate(messages):
            route = routes.get((channel, symbol))
            if route is None:
                route = self._route(channel, symbol, _any_form(index, raw, structs, sources))
            targets, needs_model, needs_struct = route
            if not targets:
                self.unrouted += 1
                continue
            raw_item: Item = (channel, symbol, raw)
            model_item: Any = raw_item
            struct_item: Any = raw_item
            if needs_model:
                source = sources[index] if sources is not None else None
                try:
                    if source is not None:  # the fast path: no validation needed
                        model_item = (channel, symbol, build(channel, source))
                    else:  # a value only validation can judge (or no source decoded)
                        model_item = (channel, symbol, parse(channel, symbol, raw))
                    parsed += 1
                except ProtocolError as exc:
                    # No model can be built; raw subscribers still get the message.
                    on_malformed(str(exc))
                    model_item = _UNPARSED
                    uniform = False
            if needs_struct:
                struct = structs[index] if structs is not None else _UNPARSED
                error: Exception | None = None
                if struct is _UNPARSED:
                    try:
                        struct = _struct_of(channel, raw)
                    except (ValueError, TypeError) as exc:  # msgspec's errors are ValueErrors
                        struct, error = None, exc
                if struct is None:
                    if model_item is not _UNPARSED:  # one count per message
                        why = error if error is not None else "a value of the wrong type"
                        on_malformed(f"invalid {channel} message for {symbol!r}: {why}")
                    struct_item = _UNPARSED
                    uniform = False
                else:
                    struct_item = (channel, symbol, struct)
            if shared is None:
                shared = targets
            elif targets is not shared:
                uniform = False
            entries.append((targets, raw_item, model_item, struct_item))
        self.parsed += parsed
        if shared is None:
            return []
        slot = _SLOT
        if uniform:
            # The common case: every message of the frame goes to the same consumers.
            # One list per form, shared by their inboxes (push never mutates it), so
            # the work per message no longer grows with the number of consumers.
            lists: dict[int, list[Item]] = {}
            overflowed: list[Inbox] = []
            for sub in shared:
                at = slot[sub.form]
                items = lists.get(at)
                if items is None:
                    items = lists[at] = [entry[at] for entry in entries]
                if not sub.push(items):
                    overflowed.append(sub)
            return overflowed
        batches: dict[Inbox, list[Item]] = {}
        for entry in entries:
            for sub in entry[0]:
                item = entry[slot[sub.form]]
                if item is _UNPARSED:
                    continue
                batch = batches.get(sub)
                if batch is None:
                    batches[sub] = batch = []
                batch.append(item)
        return [sub for sub, batch in batches.items() if not sub.push(batch)]

    def _route(self, channel: str, symbol: str, message: Any) -> _Route:
        by_symbol = self._index.get(channel)
        if not by_symbol:
            return (), False, False
        if channel == "news":  # routed by the article's symbols; not cached
            if isinstance(message, dict):
                symbols = message.get("symbols")
            else:
                symbols = getattr(message, "symbols", None)
            wanted = [s for s in (symbols or ()) if isinstance(s, str)] + ["*"]
            found: dict[Inbox, None] = {}
            for wanted_symbol in wanted:
                found.update(dict.fromkeys(by_symbol.get(wanted_symbol, ())))
            return self._describe(tuple(found))
        found = dict.fromkeys(by_symbol.get(symbol, ()))
        found.update(dict.fromkeys(by_symbol.get("*", ())))
        targets = tuple(found)
        targets = self._target_sets.setdefault(targets, targets)
        route = self._describe(targets)
        self._routes[(channel, symbol)] = route
        return route

    @staticmethod
    def _describe(targets: tuple[Inbox, ...]) -> _Route:
        forms = {sub.form for sub in targets}
        return targets, "model" in forms, "struct" in forms
