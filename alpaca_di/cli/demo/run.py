"""``alpaca-di demo``: seven components, one container, one connection per endpoint.

Run ``alpaca-di demo`` (or ``python -m alpaca_di demo``, or ``make demo``). It

1. starts the embedded :class:`~alpaca_di.testing.AlpacaEmulator` (a seeded
   synthetic market, ``--rate`` messages per second per connection);
2. builds the demo's application container (:class:`~alpaca_di.cli.demo.app.DemoApp`),
   which embeds ``AlpacaContainer`` and declares a momentum strategy, a crypto
   watcher, a risk monitor, a trade tape, an order log, a news desk and an
   executor that places a few orders;
3. shows, while they run, the prices, the order events and a health panel
   built from ``container.health()`` and the emulator's own counters: one
   socket per endpoint, the consumers sharing each, messages received and
   dropped;
4. ``--duration`` seconds (default 15) after the components started, or at Ctrl-C, stops them,
   calls ``shutdown_resources()`` and prints the final health report.

On a terminal the view redraws in place (``rich.live``); otherwise (pipes, CI)
it prints one plain progress line per second. Phases ("connecting",
"waiting for first prices", ...) are always shown, so nothing waits silently.

``--json`` prints **only** the final :class:`~alpaca_di.hub.health.HealthReport`
(``model_dump_json``, top-level ``connections``) on stdout; the view and the
progress go to stderr. The final report is the snapshot taken **at the end of
the run, just before shutdown**: every connection in it is ``connected`` and
lists the consumers that shared it. The shutdown that follows is confirmed on
the view's stream ("closed 4 connections in 12 ms; the emulator sees 0 sockets
open").

``--live`` reads ``APCA_API_KEY_ID`` and ``APCA_API_SECRET_KEY`` and uses Alpaca's
paper endpoints instead of the emulator; the executor then only prices its
orders (a dry run) unless ``--place-orders`` is given. Missing keys exit with
code 2 and a message naming the variables; the secret is never printed.

Exit codes: 0 when the run ended with every connection healthy and no
component error (Ctrl-C is a normal end), 1 otherwise, 2 for bad usage or
missing credentials.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from alpaca_di.errors import ServerError, describe_error

if TYPE_CHECKING:
    from rich.console import Console

    from alpaca_di.cli.demo.app import DemoApp
    from alpaca_di.cli.demo.bars import StagedOutage
    from alpaca_di.cli.demo.components import Component
    from alpaca_di.cli.demo.view import PriceRow, ServerView, Snapshot
    from alpaca_di.emulator import AlpacaEmulator
    from alpaca_di.hub.health import HealthReport

__all__ = ["DEMO_KEY_ID", "DEMO_SECRET", "configure", "run"]

DEMO_KEY_ID = "PKDEMO0000000001"
"""The key id the demo uses against the emulator."""
DEMO_SECRET = "alpaca-di-demo-secret-not-a-real-key"  # noqa: S105 - a placeholder for the emulator
"""The secret the demo uses against the emulator (never printed)."""

_EXPECTED_KINDS = ("stock", "crypto", "news", "trading")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` subcommand's arguments."""
    parser.add_argument(
        "--duration",
        type=_positive,
        default=15.0,
        help="seconds to run once the components started (default 15; Ctrl-C ends earlier)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only the final HealthReport as JSON on stdout (the view goes to stderr)",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="use APCA_API_KEY_ID / APCA_API_SECRET_KEY against Alpaca's paper endpoints "
        "instead of the embedded emulator",
    )
    parser.add_argument(
        "--place-orders",
        action="store_true",
        help="with --live: really submit the demo's few small paper orders (default: dry run)",
    )
    parser.add_argument(
        "--rate",
        type=_non_negative,
        default=200.0,
        help="emulator: synthetic messages per second per connection (default 200)",
    )
    parser.add_argument(
        "--no-drop",
        action="store_true",
        help="emulator: do not drop the stock stream once running, 30%% into the run (it shows "
        "the gap notice and bar backfill)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="emulator: seed of the synthetic market (default 7)"
    )
    parser.add_argument(
        "--order-pace",
        type=_non_negative,
        default=0.5,
        help="seconds between the executor's orders (default 0.5)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code (see the module docstring)."""
    try:
        from rich.console import Console
    except ImportError:
        print(
            "alpaca-di demo: its live view needs the 'demo' extra (rich): "
            "pip install 'alpaca-di[demo]' (make demo installs it)",
            file=sys.stderr,
        )
        return 2

    console = Console(stderr=bool(args.json))
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # plain output (CI logs): wide enough for the tables
    target = _Target.from_args(args)
    if target is None:
        return 2
    return _Demo(args, console, target).run()


# ---------------------------------------------------------------------------- target


@dataclass
class _Target:
    """Where the demo connects: the emulator (default) or Alpaca's paper endpoints."""

    live: bool
    alpaca_config: dict[str, Any]
    key_id: str
    description: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _Target | None:
        if not args.live:
            return cls(False, {}, DEMO_KEY_ID, "embedded emulator")
        from alpaca_di.errors import ConfigurationError
        from alpaca_di.settings import AlpacaSettings

        try:
            settings = AlpacaSettings.load(paper=True)
        except ConfigurationError as exc:
            print(
                "alpaca-di demo --live needs the keys of an Alpaca paper account: set "
                "APCA_API_KEY_ID and APCA_API_SECRET_KEY (or run without --live to use the "
                f"embedded emulator).\n{exc}",
                file=sys.stderr,
            )
            return None
        config = settings.model_dump()  # the secret stays a SecretStr
        description = (
            f"Alpaca paper ({settings.data_stream_url}, feed {settings.feed}) as "
            f"{settings.credentials().fingerprint}"
        )
        return cls(True, config, settings.api_key, description)


# ---------------------------------------------------------------------------- the run


class _Demo:
    def __init__(self, args: argparse.Namespace, console: Console, target: _Target) -> None:
        self.args = args
        self.console = console
        self.target = target
        self.duration: float = args.duration
        # Set by the SIGINT/SIGTERM handler: a plain attribute, because a signal handler
        # must not take a lock the interrupted main thread may hold (Event.set would).
        self.interrupted = False
        self.t0 = time.monotonic()
        # --duration counts from the components' start: a slow start-up (a loaded
        # machine, an emulator coming up) never eats the run itself.
        self.running_since: float | None = None
        self.phase = "starting"
        self.emulator: AlpacaEmulator | None = None
        self.outage: StagedOutage | None = None
        self.staged = False
        self.app: DemoApp | None = None
        self.components: list[Component] = []
        self.first_prices: dict[str, float] = {}
        self.first_price_at: float | None = None
        self.samples: deque[tuple[float, int]] = deque(maxlen=64)
        self.problems: list[str] = []
        self.failure: str | None = None  # a connection failed for good: the run ends early
        self.tty = console.is_terminal
        self.live_view = False  # True while rich.live redraws the view (phases show in it)

    # -- output ----------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, phase: str) -> None:
        """Set the phase shown in the view; in plain mode also print it as a line."""
        if phase == self.phase:
            return
        self.phase = phase
        if not self.live_view:
            self._line(f"[{self.elapsed():6.1f}s] {phase}")

    def _line(self, text: str, style: str | None = None) -> None:
        """Print one plain line (no markup, no highlighting, never re-wrapped)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True, style=style)

    # -- main ------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            with _interrupts(self._interrupted):
                try:
                    final = self._run()
                except Exception as exc:  # the demo reports any failure and exits 1
                    self._line(f"alpaca-di demo failed: {type(exc).__name__}: {exc}", "red")
                    self._shutdown()
                    return 1
        except KeyboardInterrupt:  # a second Ctrl-C: leave without waiting for anything
            self._line("interrupted twice: exiting without a clean shutdown", "red")
            return 130
        return self._finish(final)

    def _interrupted(self) -> None:
        self.interrupted = True

    def _run(self) -> _Final:
        from alpaca_di.cli.demo.app import DemoApp

        if self.target.live:
            self.say(f"connecting to {self.target.description}...")
            alpaca_config = self.target.alpaca_config
        else:
            self.say(
                f"starting the embedded Alpaca emulator (seed {self.args.seed}, "
                f"{self.args.rate:g} msg/s per connection)..."
            )
            emulator = self._start_emulator()
            self.say(f"emulator ready at {emulator.ws_url} (REST {emulator.api_url})")
            alpaca_config = {
                "api_key": DEMO_KEY_ID,
                "secret_key": DEMO_SECRET,
                "data_stream_url": emulator.ws_url,
                "trading_stream_url": emulator.trading_stream_url,
                "api_url": emulator.api_url,
                "data_url": emulator.api_url,
            }
        app = DemoApp()
        app.config.from_dict(
            {
                "alpaca": alpaca_config,
                "place_orders": self.args.place_orders or not self.target.live,
                "order_pace": self.args.order_pace,
            }
        )
        self.app = app
        components: list[Component] = app.components()
        self.say(
            f"starting {len(components)} components "
            f"({', '.join(c.name for c in components)}) on one AlpacaContainer..."
        )
        for component in components:
            try:
                component.start()
            except ServerError as exc:
                # Its connection failed for good (bad keys, a plan without the feed)
                # before it could subscribe: the same early end as a failure seen later.
                self._update_phase(app.alpaca.health(), [])
                if self.failure is None:
                    self.failure = f"{component.name} could not start: {describe_error(exc)}"
                    self.say(self.failure)
                break
            self.components.append(component)
        self.running_since = time.monotonic()
        self._loop()
        self._end_outage()
        final = self._final(app.alpaca.health())
        self._shutdown()
        return final

    def _stage_outage(self, report: HealthReport) -> None:
        """With the emulator: drop the stock stream once, when running and 30 % in (bars.py)."""
        from urllib.parse import urlsplit

        from alpaca_di.cli.demo.bars import StagedOutage

        if (
            self.emulator is None
            or self.app is None
            or self.args.no_drop
            or self.staged
            or self.first_price_at is None
            or self.elapsed() < self._ends_at() - self.duration * 0.7
            or not all(c.ready for c in report.connections if c.kind == "stock")
        ):
            return
        self.staged = True
        path = urlsplit(self.app.alpaca.stock_stream().endpoint).path
        self.outage = StagedOutage(self.emulator, path, self.app.events(), at=0.0)
        self.outage.start()

    def _end_outage(self) -> None:
        """Finish the outage, and let the stock stream be confirmed again before the report."""
        outage, self.outage = self.outage, None
        if outage is None or self.app is None:
            return
        outage.stop()
        watcher = self._component("bars")
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not self.interrupted:
            stock = [c for c in self.app.alpaca.health().connections if c.kind == "stock"]
            if all(c.ready for c in stock) and (watcher is None or watcher.settled):
                return
            time.sleep(0.05)  # a bounded poll of health (nothing to wait on across threads)

    def _start_emulator(self) -> AlpacaEmulator:
        from alpaca_di.emulator import AlpacaEmulator

        emulator = AlpacaEmulator(rate=self.args.rate, seed=self.args.seed)
        emulator.start()
        self.emulator = emulator
        return emulator

    def _loop(self) -> None:
        """Tick (render) until the duration is over or Ctrl-C."""
        from rich.live import Live

        from alpaca_di.cli.demo.view import progress_line, render

        if not self.tty:
            next_line = 1.0
            while not self._over():
                snapshot = self._snapshot()
                if snapshot.elapsed >= next_line:
                    next_line += 1.0
                    self._line(progress_line(snapshot))
                time.sleep(0.1)  # the render tick, not synchronisation
        else:
            with Live(console=self.console, auto_refresh=False, transient=True) as live:
                self.live_view = True
                try:
                    while True:
                        live.update(render(self._snapshot()), refresh=True)
                        if self._over():
                            break
                        time.sleep(0.25)  # the render tick, not synchronisation
                finally:
                    self.live_view = False
        if self.interrupted:
            self.say("Ctrl-C: ending the run...")

    def _ends_at(self) -> float:
        """When the run ends, on the ``elapsed()`` clock: ``--duration`` after the start."""
        started = self.elapsed() if self.running_since is None else self.running_since - self.t0
        return started + self.duration

    def _over(self) -> bool:
        if self.interrupted or self.failure is not None:
            return True
        return self.running_since is not None and self.elapsed() >= self._ends_at()

    def _stop_components(self) -> None:
        if self.components:
            self.say("stopping the components (the executor first)...")
        while self.components:
            component = self.components.pop()
            try:
                component.stop()
            except Exception as exc:  # keep stopping the others
                self.problems.append(f"{component.name} failed to stop: {exc}")

    def _shutdown(self) -> None:
        """Stop components, close every connection, stop the emulator; report the timing."""
        outage, self.outage = self.outage, None
        if outage is not None:
            outage.stop()
        self._stop_components()
        app, self.app = self.app, None
        if app is not None:
            connections = len(app.alpaca.health().connections)
            self.say("shutting down: app.shutdown_resources()...")
            started = time.monotonic()
            app.shutdown_resources()
            took = (time.monotonic() - started) * 1000
            self.say(self._closed_text(connections, took))
        emulator, self.emulator = self.emulator, None
        if emulator is not None:
            emulator.stop()

    def _closed_text(self, connections: int, took_ms: float) -> str:
        text = f"closed {connections} connections in {took_ms:.0f} ms"
        emulator = self.emulator
        if emulator is None:
            return text
        paths = ("/v2/iex", "/v1beta3/crypto/us", "/v1beta1/news", "/stream")

        def open_sockets() -> int:
            return sum(emulator.counters(DEMO_KEY_ID, path).open for path in paths)

        try:
            emulator.wait_until(lambda: open_sockets() == 0, timeout=2.0)
        except TimeoutError:
            self.problems.append(f"the emulator still sees {open_sockets()} sockets open")
        closes = sum(emulator.counters(DEMO_KEY_ID, p).close_frames_received for p in paths)
        return (
            f"{text}; the emulator sees {open_sockets()} sockets open "
            f"and received {closes} close frames"
        )

    # -- snapshots -------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        from alpaca_di.cli.demo.view import Snapshot
        from alpaca_di.hub.health import HealthReport

        app = self.app
        report = app.alpaca.health() if app is not None else HealthReport.of([])
        now = self.elapsed()
        received = sum(c.messages_received for c in report.connections)
        self.samples.append((now, received))
        prices = self._prices()
        self._update_phase(report, prices)
        self._stage_outage(report)
        return Snapshot(
            target=self.target.description,
            phase=self.phase,
            elapsed=now,
            ends_at=self._ends_at(),
            health=report,
            server=self._server(report),
            users=self._users(),
            prices=prices,
            events=app.events().recent(8) if app is not None else [],
            started_at=self.t0,
            orders=self._orders_text(),
            news=self._news_text(),
            bars=self._bars_text(),
            account=self._account_text(),
            rate=self._rate(),
        )

    def _update_phase(self, report: HealthReport, prices: list[PriceRow]) -> None:
        if self.app is None or self.interrupted or self.failure is not None:
            return
        failed = [c for c in report.connections if c.state == "failed"]
        if failed:  # not retried (bad keys, plan without the feed...): end the run now
            self.failure = "; ".join(
                f"the {c.kind} connection failed: {c.last_error or 'unknown error'}" for c in failed
            )
            self.say(self.failure)
            return
        states = {c.kind: c.state for c in report.connections}
        pending = [k for k in _EXPECTED_KINDS if states.get(k) != "connected"]
        if pending:
            shown = ", ".join(f"{k} {states.get(k, 'not opened')}" for k in _EXPECTED_KINDS)
            self.say(f"connecting: {shown}...")
        elif not any(row.price is not None for row in prices):
            self.say("connected; waiting for first prices...")
        else:
            if self.first_price_at is None:
                self.first_price_at = self.elapsed()
            self.say(
                f"running: first prices after {self.first_price_at:.2f} s; "
                f"ends after {self.duration:g} s (Ctrl-C ends earlier)"
            )

    def _component(self, name: str) -> Any:
        for component in self.components:
            if component.name == name:
                return component
        return None

    def _prices(self) -> list[PriceRow]:
        from alpaca_di.cli.demo.components import CRYPTO_PAIRS, STOCK_SYMBOLS
        from alpaca_di.cli.demo.view import PriceRow

        app = self.app
        if app is None or not self.components:
            return []
        pricing = app.alpaca.pricing_service()
        snaps = pricing.snapshot()
        momentum, risk, tape, crypto = (
            self._component(name) for name in ("momentum", "risk", "tape", "crypto")
        )
        signals = momentum.signals() if momentum is not None else {}
        spreads = risk.spreads() if risk is not None else {}
        trades = {
            **(tape.counts() if tape is not None else {}),
            **(crypto.trades() if crypto is not None else {}),
        }
        rows = []
        for symbol in (*STOCK_SYMBOLS, *CRYPTO_PAIRS):
            snap = snaps.get(symbol)
            price = snap.price if snap is not None else None
            if price is not None:
                self.first_prices.setdefault(symbol, price)
            first = self.first_prices.get(symbol)
            signal = signals.get(symbol)
            bid = snap.bid if snap is not None else None
            ask = snap.ask if snap is not None else None
            spread = spreads.get(symbol)
            if spread is None and bid and ask:
                spread = (ask - bid) / ((ask + bid) / 2.0) * 10_000
            rows.append(
                PriceRow(
                    symbol=symbol,
                    bid=bid,
                    ask=ask,
                    price=price,
                    change_pct=(price / first - 1.0) * 100.0 if price and first else None,
                    signal=signal.action if signal is not None else "-",
                    spread_bps=spread,
                    trades=trades.get(symbol, 0),
                    age=snap.age if snap is not None else None,
                )
            )
        return rows

    def _server(self, report: HealthReport) -> dict[str, ServerView] | None:
        from alpaca_di.cli.demo.view import ServerView, path_of

        emulator = self.emulator
        if emulator is None:
            return None
        views = {}
        for connection in report.connections:
            counters = emulator.counters(self.target.key_id, path_of(connection.endpoint))
            views[connection.endpoint] = ServerView(
                open=counters.open,
                max_concurrent=counters.max_concurrent,
                accepted=counters.connections_accepted,
                close_frames=counters.close_frames_received,
            )
        return views

    def _users(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for component in self.components:
            for kind in component.streams:
                users.setdefault(kind, []).append(component.name)
        return users

    def _rate(self) -> float:
        samples = self.samples
        if len(samples) < 2:
            return 0.0
        now, latest = samples[-1]
        for at, count in samples:
            if now - at <= 1.0:
                return (latest - count) / (now - at) if now > at else 0.0
        return 0.0

    def _orders_text(self) -> str:
        executor = self._component("executor")
        if executor is None:
            return "-"
        if not executor.place_orders:
            return "dry run (add --place-orders to submit)"
        text = f"{executor.filled}/{executor.planned} filled"
        if executor.failed:
            text += f", {executor.failed} failed"
        return text

    def _news_text(self) -> str:
        news = self._component("news")
        if news is None:
            return "-"
        latest = news.latest or "waiting for the first headline"
        if len(latest) > 48:
            latest = latest[:47] + "..."
        return (
            f"{news.processed:,} scored, {news.dropped:,} dropped "
            f"(slow model {news.work_seconds * 1000:.0f} ms/article, queue {news.maxsize}); "
            f"latest: {latest}"
        )

    def _bars_text(self) -> str:
        watcher = self._component("bars")
        return "-" if watcher is None else watcher.describe()

    def _account_text(self) -> str:
        risk = self._component("risk")
        account = risk.account() if risk is not None else None
        if account is None:
            return "reading..."
        return (
            f"equity {account.equity:,.2f}, cash {account.cash:,.2f}, "
            f"{account.positions} positions; {risk.alerts:,} wide-spread alerts"
        )

    # -- the end ---------------------------------------------------------------------------

    def _final(self, report: HealthReport) -> _Final:
        """What the final report shows, captured before anything is stopped."""
        app = self.app
        events = app.events() if app is not None else None
        return _Final(
            report=report,
            server=self._server(report),
            users=self._users(),
            orders=f"orders: {self._orders_text()}; news: {self._news_text()}; "
            f"bars: {self._bars_text()}",
            errors=events.errors if events is not None else 0,
        )

    def _finish(self, final: _Final) -> int:
        from alpaca_di.cli.demo.view import health_table, sharing_summary

        report = final.report
        problems = list(self.problems)
        if not report.connections:
            problems.append("no connection was opened")
        elif not report.healthy:
            problems.append("a connection was not healthy at the end of the run")
        if final.errors:
            problems.append(f"{final.errors} component errors (see the event log)")
        summary = sharing_summary(report, final.server)
        if self.args.json:
            for line in (summary, *problems):
                self._line(line)
            sys.stdout.write(report.model_dump_json(indent=2) + "\n")
            sys.stdout.flush()
        else:
            self.console.print()
            self.console.print(
                health_table(
                    report,
                    final.server,
                    final.users,
                    title="Final health report (end of the run, before shutdown)",
                )
            )
            self._line(summary)
            self._line(final.orders)
            for problem in problems:
                self._line(problem, "red")
        return 1 if problems else 0


@dataclass(frozen=True)
class _Final:
    report: HealthReport
    server: dict[str, ServerView] | None
    users: dict[str, list[str]]
    orders: str
    errors: int


@contextmanager
def _interrupts(handler: Callable[[], None]) -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into ``handler()``; a second Ctrl-C interrupts hard.

    ``handler`` runs in the main thread between two bytecodes of whatever it was
    doing: it must not acquire locks (set a flag).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}

    def restore() -> None:
        for number, old in previous.items():
            signal.signal(number, old)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        restore()
        handler()

    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.getsignal(number)
        signal.signal(number, on_signal)
    try:
        yield
    finally:
        restore()


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value
