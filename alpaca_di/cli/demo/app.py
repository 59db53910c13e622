"""The application behind ``alpaca-di demo``: independent components, one container.

:class:`DemoApp` is an ordinary application container. It embeds
:class:`~alpaca_di.AlpacaContainer` with ``providers.Container`` and declares the
components of a small trading application, each asking for what it needs and
nothing else:

* :class:`MomentumStrategy` -- fast/slow moving averages of AAPL, MSFT, SPY, TSLA
  and NVDA, fed by ``pricing_service`` listeners;
* :class:`CryptoWatcher` -- BTC/USD and ETH/USD prices (``pricing_service``) and
  their trade flow (its own subscription on ``crypto_stream``);
* :class:`RiskMonitor` -- spreads of the same five symbols (its own quote
  subscription on ``stock_stream``) and the account through ``alpaca_manager``;
* :class:`TradeTape` -- every trade of the five symbols, read by *iterating* a
  subscription on ``stock_stream`` in a thread;
* :class:`OrderLog` -- every order event, from ``trading_service.subscribe()``;
* :class:`NewsDesk` -- every headline from ``news_stream``, scored by a
  deliberately slow "model" behind a small bounded queue, so the health report
  shows messages dropped for this consumer only;
* :class:`~alpaca_di.cli.demo.bars.BarWatcher` -- minute bars of the five stocks with
  ``backfill=True``: told of each gap of the stock stream, it gets the bars it missed;
* :class:`Executor` -- a few orders through ``AlpacaManager.submit_and_wait``
  (market orders and one marketable limit priced by ``marketable_limit_price``).

None of them knows about connections; the container shares one socket per
endpoint between all of them. Every component has ``start()`` and ``stop()``
and a ``streams`` attribute naming the connections it uses (the demo's health
view shows who shares what)::

    app = DemoApp()
    app.config.from_dict({"alpaca": {...}, "place_orders": True, "order_pace": 0.5})
    components = app.components()
    for component in components:
        component.start()
    ...
    for component in reversed(components):
        component.stop()
    app.shutdown_resources()
"""

from __future__ import annotations

from dependency_injector import containers, providers

from alpaca_di.cli.demo.bars import BarWatcher
from alpaca_di.cli.demo.components import (
    Component,
    CryptoWatcher,
    EventLog,
    Executor,
    MomentumStrategy,
    NewsDesk,
    OrderLog,
    RiskMonitor,
    TradeTape,
)
from alpaca_di.containers import AlpacaContainer

__all__ = ["DemoApp"]


def _components(*components: Component) -> list[Component]:
    return list(components)


class DemoApp(containers.DeclarativeContainer):
    """The demo application: eight components on one embedded ``AlpacaContainer``.

    Configuration: ``alpaca`` (the :class:`~alpaca_di.settings.AlpacaSettings`
    fields), ``place_orders`` (bool) and ``order_pace`` (seconds between orders).

    Example::

        app = DemoApp()
        app.config.from_dict({"alpaca": {"api_key": "PK...", "secret_key": "..."},
                              "place_orders": True, "order_pace": 0.5})
        components = app.components()
    """

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

    events = providers.Singleton(EventLog)
    momentum = providers.Singleton(MomentumStrategy, pricing=alpaca.pricing_service)
    crypto = providers.Singleton(
        CryptoWatcher, pricing=alpaca.pricing_service, crypto_stream=alpaca.crypto_stream
    )
    risk = providers.Singleton(
        RiskMonitor, stock_stream=alpaca.stock_stream, manager=alpaca.alpaca_manager, events=events
    )
    tape = providers.Singleton(TradeTape, stock_stream=alpaca.stock_stream)
    order_log = providers.Singleton(OrderLog, trading=alpaca.trading_service, events=events)
    news = providers.Singleton(NewsDesk, news_stream=alpaca.news_stream)
    bars = providers.Singleton(BarWatcher, stock_stream=alpaca.stock_stream, events=events)
    executor = providers.Singleton(
        Executor,
        manager=alpaca.alpaca_manager,
        prices=alpaca.pricing_service,
        events=events,
        place_orders=config.place_orders.as_(bool),
        pace=config.order_pace.as_float(),
    )

    # Start order: the listeners first, the executor last (stop in reverse).
    components = providers.Callable(
        _components, momentum, crypto, risk, tape, order_log, news, bars, executor
    )
