"""What ``alpaca-di demo`` draws: the live view, plain progress lines, the final report.

Everything here is a pure function of a :class:`Snapshot` (or of a
:class:`~alpaca_di.hub.health.HealthReport`): the demo builds a snapshot on
every tick and renders it with rich, either as a live-updating view (a
terminal) or as one plain line per second (pipes, CI)::

    console.print(render(snapshot))          # the live view's content
    print(progress_line(snapshot))           # "[   3.0s] 4/4 connected | 1,204 msgs ..."
    console.print(health_table(report, server, users))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from alpaca_di.cli.demo.components import LogEntry
from alpaca_di.hub.health import ConnectionHealth, HealthReport

__all__ = [
    "PriceRow",
    "ServerView",
    "Snapshot",
    "health_table",
    "path_of",
    "progress_line",
    "render",
    "sharing_summary",
]


@dataclass(frozen=True)
class PriceRow:
    """One row of the prices table."""

    symbol: str
    bid: float | None
    ask: float | None
    price: float | None
    change_pct: float | None
    signal: str
    spread_bps: float | None
    trades: int
    age: float | None


@dataclass(frozen=True)
class ServerView:
    """The emulator's side of one endpoint: sockets it sees for the demo's key."""

    open: int
    max_concurrent: int
    accepted: int
    close_frames: int


@dataclass(frozen=True)
class Snapshot:
    """Everything one frame of the demo shows."""

    target: str
    phase: str
    elapsed: float
    ends_at: float  # on the elapsed clock
    health: HealthReport
    server: Mapping[str, ServerView] | None
    users: Mapping[str, Sequence[str]]
    prices: Sequence[PriceRow]
    events: Sequence[LogEntry]
    started_at: float
    orders: str
    news: str
    account: str
    rate: float
    bars: str = "-"


def path_of(endpoint: str) -> str:
    """The path of an endpoint URL (``/v2/iex``), which is what the table shows."""
    return urlsplit(endpoint).path or endpoint


def _money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _server_cell(server: Mapping[str, ServerView] | None, endpoint: str) -> str:
    if server is None:
        return "n/a"
    view = server.get(endpoint)
    if view is None:
        return "?"
    return f"{view.open} open / max {view.max_concurrent}"


def _state_style(connection: ConnectionHealth) -> str:
    if connection.state == "connected":
        return "green"
    if connection.state in ("failed", "reconnecting"):
        return "red"
    return "yellow"


def health_table(
    report: HealthReport,
    server: Mapping[str, ServerView] | None,
    users: Mapping[str, Sequence[str]],
    *,
    title: str = "Connections",
) -> Table:
    """One row per connection: state, consumers, who shares it, counters, the server's view."""
    table = Table(title=title, title_justify="left")
    table.add_column("kind")
    table.add_column("endpoint")
    table.add_column("state")
    table.add_column("consumers", justify="right")
    table.add_column("used by")
    table.add_column("received", justify="right")
    table.add_column("delivered", justify="right")
    table.add_column("dropped", justify="right")
    table.add_column("server sockets", justify="right")
    for connection in report.connections:
        table.add_row(
            connection.kind,
            path_of(connection.endpoint),
            Text(connection.state, style=_state_style(connection)),
            str(connection.consumers),
            ", ".join(users.get(connection.kind, ())),
            f"{connection.messages_received:,}",
            f"{connection.messages_delivered:,}",
            Text(
                f"{connection.messages_dropped:,}",
                style="yellow" if connection.messages_dropped else "",
            ),
            _server_cell(server, connection.endpoint),
        )
    if not report.connections:
        table.add_row("-", "no connection yet", "", "", "", "", "", "", "")
    return table


def sharing_summary(report: HealthReport, server: Mapping[str, ServerView] | None) -> str:
    """One sentence proving (or disproving) one socket per endpoint."""
    endpoints = {(c.kind, c.endpoint) for c in report.connections}
    consumers = sum(c.consumers for c in report.connections)
    received = sum(c.messages_received for c in report.connections)
    dropped = sum(c.messages_dropped for c in report.connections)
    head = (
        f"{len(endpoints)} endpoints, {len(report.connections)} connections, "
        f"{consumers} consumers sharing them; {received:,} messages received, "
        f"{dropped:,} dropped"
    )
    if server is None:
        return head
    views = [server[c.endpoint] for c in report.connections if c.endpoint in server]
    most = max((v.max_concurrent for v in views), default=0)
    verdict = "yes" if views and most == 1 else "NO"
    return f"{head}. One socket per endpoint (server side, at most {most} at once): {verdict}"


def progress_line(snapshot: Snapshot) -> str:
    """The plain one-line progress report used when stdout is not a terminal."""
    report = snapshot.health
    received = sum(c.messages_received for c in report.connections)
    dropped = sum(c.messages_dropped for c in report.connections)
    connected = sum(c.state == "connected" for c in report.connections)
    prices = " ".join(
        f"{row.symbol} {_money(row.price)}" for row in snapshot.prices if row.price is not None
    )
    gaps = f" | bars: {snapshot.bars}" if report.gaps else ""
    return (
        f"[{snapshot.elapsed:6.1f}s] {connected}/{len(report.connections)} connected | "
        f"{received:,} msgs ({snapshot.rate:,.0f}/s), {dropped:,} dropped | "
        f"orders {snapshot.orders}{gaps} | {prices or 'waiting for first prices...'}"
    )


def _prices_table(snapshot: Snapshot) -> Table:
    table = Table(title="Prices (PricingService + own subscriptions)", title_justify="left")
    table.add_column("symbol")
    table.add_column("bid", justify="right")
    table.add_column("ask", justify="right")
    table.add_column("mid / last", justify="right")
    table.add_column("chg %", justify="right")
    table.add_column("momentum")
    table.add_column("spread bps", justify="right")
    table.add_column("trades", justify="right")
    table.add_column("age", justify="right")
    for row in snapshot.prices:
        change = "-" if row.change_pct is None else f"{row.change_pct:+.3f}"
        style = "green" if row.signal == "BUY" else "red" if row.signal == "SELL" else ""
        table.add_row(
            row.symbol,
            _money(row.bid),
            _money(row.ask),
            _money(row.price),
            change,
            Text(row.signal, style=style),
            "-" if row.spread_bps is None else f"{row.spread_bps:.1f}",
            f"{row.trades:,}",
            "-" if row.age is None else f"{row.age:.1f}s",
        )
    return table


def _events_table(snapshot: Snapshot) -> Table:
    table = Table(title="Order events and component log", title_justify="left", expand=True)
    table.add_column("t", justify="right", width=7)
    table.add_column("from", width=9)
    table.add_column("event", ratio=1, overflow="ellipsis", no_wrap=True)
    for entry in snapshot.events:
        table.add_row(
            f"{entry.at - snapshot.started_at:.1f}s",
            entry.source,
            Text(entry.text, style="red" if entry.error else ""),
        )
    if not snapshot.events:
        table.add_row("", "", Text("nothing yet", style="dim"))
    return table


def render(snapshot: Snapshot) -> RenderableType:
    """The live view: status, prices, events, connections."""
    remaining = max(snapshot.ends_at - snapshot.elapsed, 0.0)
    status = Text.assemble(
        (snapshot.phase, "bold cyan"),
        f"   {snapshot.elapsed:.1f} s elapsed, {remaining:.1f} s left   ",
        (f"{snapshot.rate:,.0f} msg/s", "bold"),
        "   Ctrl-C stops",
    )
    header = Panel(
        Group(status, Text(f"target: {snapshot.target}", style="dim")),
        title="alpaca-di demo: many components, one connection per endpoint",
        title_align="left",
    )
    footer = Text.assemble(
        ("orders ", "bold"),
        snapshot.orders,
        "   ",
        ("news ", "bold"),
        snapshot.news,
        "   ",
        ("account ", "bold"),
        snapshot.account,
        "   ",
        ("bars ", "bold"),
        snapshot.bars,
    )
    connections = health_table(
        snapshot.health, snapshot.server, snapshot.users, title="Connections (container.health())"
    )
    return Group(
        header,
        _prices_table(snapshot),
        _events_table(snapshot),
        connections,
        Text(sharing_summary(snapshot.health, snapshot.server), style="dim"),
        footer,
    )
