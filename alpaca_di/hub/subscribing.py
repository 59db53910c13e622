"""The typed ``subscribe`` of a hub: what a subscription delivers follows its ``form``.

:class:`Subscriber` holds :meth:`~Subscriber.subscribe`'s signature, its typed
overloads and its documentation; a hub implements ``_subscribe``. The keywords
live once, in :class:`SubscribeOptions`, so a new one is added in one place
(the overloads take them as ``**options``)::

    sub = hub.subscribe(quotes=["AAPL"], form="struct")   # Subscription[MarketStruct]
    raw = hub.subscribe(quotes=["AAPL"], raw=True)        # Subscription[dict[str, Any]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

from typing_extensions import Unpack

from alpaca_di.hub.inbox import MessageForm, check_form
from alpaca_di.hub.subscription import Handler, Subscription
from alpaca_di.transport.options import OverflowPolicy

if TYPE_CHECKING:
    from alpaca_di.protocol.models import ModelMessage
    from alpaca_di.protocol.structs import MarketStruct

__all__ = ["USE_DEFAULT", "SubscribeOptions", "Subscriber", "check_subscribe_form"]

USE_DEFAULT: Any = object()
"""``maxsize``'s default: the hub's ``ConnectionOptions.queue_maxsize``."""
_USE_DEFAULT = USE_DEFAULT


class SubscribeOptions(TypedDict, total=False):
    """The keywords of :meth:`StreamHub.subscribe` besides ``handler``, ``raw`` and ``form``.

    One place for the typed overloads (what a subscription delivers depends only
    on the form), so a new keyword is added here once::

        def subscribe_quotes(hub: StreamHub, **options: Unpack[SubscribeOptions]) -> None: ...
    """

    trades: Iterable[str] | str
    quotes: Iterable[str] | str
    bars: Iterable[str] | str
    updated_bars: Iterable[str] | str
    daily_bars: Iterable[str] | str
    statuses: Iterable[str] | str
    lulds: Iterable[str] | str
    corrections: Iterable[str] | str
    cancel_errors: Iterable[str] | str
    orderbooks: Iterable[str] | str
    news: Iterable[str] | str
    trade_updates: bool
    maxsize: int | None
    overflow: OverflowPolicy | None
    name: str | None
    gaps: bool
    backfill: bool


def check_subscribe_form(raw: bool, form: MessageForm | None) -> MessageForm:
    """The form asked for with ``form=`` or the older ``raw=True``; they must agree.

    ::

        check_subscribe_form(True, None)   # "raw"
    """
    if form is None:
        return "raw" if raw else "model"
    check_form(form)
    if raw and form != "raw":
        raise ValueError(f"raw=True contradicts form={form!r}: give one of them")
    return form


class Subscriber:
    """The typed ``subscribe`` every hub offers; subclasses implement ``_subscribe``."""

    # ``_subscribe(handler, channels, *, trade_updates, maxsize, overflow, raw, form, name,
    # gaps, backfill)``:
    # the hub's work once the keywords are gathered (see ``StreamHub._subscribe``).
    _subscribe: Callable[..., Subscription[Any]]

    @overload
    def subscribe(
        self,
        handler: Handler | None = None,
        *,
        raw: Literal[False] = False,
        form: Literal["model"] | None = None,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription[ModelMessage]: ...

    @overload
    def subscribe(
        self,
        handler: Handler | None = None,
        *,
        raw: Literal[False] = False,
        form: Literal["struct"],
        **options: Unpack[SubscribeOptions],
    ) -> Subscription[MarketStruct]: ...

    @overload
    def subscribe(
        self,
        handler: Handler | None = None,
        *,
        raw: Literal[True],
        form: Literal["raw"] | None = None,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription[dict[str, Any]]: ...

    @overload
    def subscribe(
        self,
        handler: Handler | None = None,
        *,
        raw: bool = False,
        form: Literal["raw"],
        **options: Unpack[SubscribeOptions],
    ) -> Subscription[dict[str, Any]]: ...

    @overload
    def subscribe(
        self,
        handler: Handler | None = None,
        *,
        raw: bool = False,
        form: MessageForm | None = None,
        **options: Unpack[SubscribeOptions],
    ) -> Subscription[Any]: ...

    def subscribe(
        self,
        handler: Handler | None = None,
        *,
        trades: Iterable[str] | str = (),
        quotes: Iterable[str] | str = (),
        bars: Iterable[str] | str = (),
        updated_bars: Iterable[str] | str = (),
        daily_bars: Iterable[str] | str = (),
        statuses: Iterable[str] | str = (),
        lulds: Iterable[str] | str = (),
        corrections: Iterable[str] | str = (),
        cancel_errors: Iterable[str] | str = (),
        orderbooks: Iterable[str] | str = (),
        news: Iterable[str] | str = (),
        trade_updates: bool = False,
        maxsize: int | None = _USE_DEFAULT,
        overflow: OverflowPolicy | None = None,
        raw: bool = False,
        form: MessageForm | None = None,
        name: str | None = None,
        gaps: bool = False,
        backfill: bool = False,
    ) -> Subscription[Any]:
        """Subscribe a consumer; returns its :class:`Subscription` at once.

        Args:
            handler: called with each message (sync or ``async def``); ``None`` to
                read the subscription as an iterator instead.
            trades, quotes, ...: symbols per channel (``"*"`` for all). Only the
                channels of this hub's kind are accepted.
            trade_updates: on the trading hub, receive order updates (never dropped).
            maxsize: queue bound (default 10,000); ``None`` is unbounded, a memory
                risk with a consumer slower than the feed.
            overflow: ``drop_oldest`` (default), ``drop_newest``, ``conflate`` (keep
                the latest per channel and symbol) or ``error`` (close the
                subscription with :class:`SubscriptionOverflowError`).
            form: what each message is: ``"model"`` (the default: alpaca-py's
                models), ``"struct"`` (the typed fast form,
                :mod:`alpaca_di.protocol.structs`: immutable, alpaca-py's attribute
                names, several times cheaper) or ``"raw"`` (the decoded dicts,
                shared, read-only). Trade updates have no struct form.
            raw: ``raw=True`` is the older spelling of ``form="raw"``.
            name: the consumer's name in metrics (1-64 of ``A-Za-z0-9_.:-``), the same
                for every subscription of one component; unnamed ones count together.
            gaps: also deliver a :class:`~alpaca_di.hub.gaps.GapNotice` in order
                with the messages each time the connection was lost and restored
                (so the items are the form's messages or ``GapNotice``).
            backfill: then also the ``bars`` and ``daily_bars`` missed, fetched through
                REST, marked, before live bars of the symbol resume; implies ``gaps``
                (``docs/gaps-and-backfill.md``); in every form (a struct: ``BackfilledBar``).

        Typed by what it delivers: ``Subscription[ModelMessage]`` (alpaca-py's
        models), ``Subscription[MarketStruct]`` with ``form="struct"``,
        ``Subscription[dict[str, Any]]`` with ``form="raw"``; ``get()`` and
        iteration return that type (narrow it with ``isinstance``).

        Raises:
            ValueError: an unknown channel for this kind, an invalid symbol, an
                unknown ``form`` (or one ``raw=True`` contradicts).
            ConnectionClosedError: the hub is closed.

        Example::

            sub = hub.subscribe(print, quotes=["AAPL"], trades="*", overflow="conflate")
            with hub.subscribe(quotes=["AAPL"], form="struct") as fast:
                quote = fast.get(timeout=5)      # alpaca_di.protocol.structs.Quote
        """
        channels = {
            "trades": trades,
            "quotes": quotes,
            "bars": bars,
            "updated_bars": updated_bars,
            "daily_bars": daily_bars,
            "statuses": statuses,
            "lulds": lulds,
            "corrections": corrections,
            "cancel_errors": cancel_errors,
            "orderbooks": orderbooks,
            "news": news,
        }
        return self._subscribe(
            handler,
            channels,
            trade_updates=trade_updates,
            maxsize=maxsize,
            overflow=overflow,
            raw=raw,
            form=form,
            name=name,
            gaps=gaps,
            backfill=backfill,
        )
