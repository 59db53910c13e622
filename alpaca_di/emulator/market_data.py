"""Alpaca's market-data REST API, served from what the emulator's streams published.

Enough of ``https://data.alpaca.markets`` for alpaca-py's
``StockHistoricalDataClient``, ``CryptoHistoricalDataClient`` and
``OptionHistoricalDataClient`` (``url_override=emu.api_url``):

* bars: ``GET /v2/stocks/bars``, ``/v2/stocks/{symbol}/bars``,
  ``/v1beta3/crypto/{loc}/bars``, ``/v1beta1/options/bars`` with ``symbols``,
  ``timeframe``, ``start``, ``end``, ``limit``, ``page_token``, ``sort`` (and
  ``feed`` for stocks), answered in pages with ``next_page_token``;
* latest: ``/v2/stocks/{quotes,trades,bars}/latest`` (and per symbol),
  ``/v1beta3/crypto/{loc}/latest/{quotes,trades,bars}``,
  ``/v1beta1/options/{quotes,trades}/latest``.

``start`` defaults to the start of the emulator clock's day (New York), ``end``
to the emulator clock's now. Stock and option endpoints need a key pair (the REST
server checks it); crypto data needs none, as on Alpaca. A plan without ``sip``
asking for recent SIP data gets Alpaca's ``403``::

    api = MarketDataApi(history, clock, plan_of=lambda key: None)
    status, body = api.handle("PKTEST", request)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alpaca_di.emulator.bars import BarHistory, Timeframe, new_york_midnight_ns
from alpaca_di.emulator.broker import RestError
from alpaca_di.emulator.clock import EmulatorClock, to_datetime, to_ns
from alpaca_di.emulator.rest import HttpRequest

__all__ = ["DATA_PREFIXES", "MarketDataApi"]

DATA_PREFIXES = ("/v2/stocks/", "/v1beta3/crypto/", "/v1beta1/options/")
"""Path prefixes of the market-data API (everything else is the trading API)."""

_CRYPTO_LOCATIONS = ("us", "us-1", "eu-1")
_STOCK_FEEDS = ("iex", "sip", "delayed_sip", "otc", "boats", "overnight")
_MAX_LIMIT = 10_000
_DEFAULT_LIMIT = 1000
_SIP_DELAY_NS = 15 * 60 * 1_000_000_000
_LATEST_KEYS = {"quotes": ("q", "quote"), "trades": ("t", "trade"), "bars": ("b", "bar")}


def _invalid(message: str) -> RestError:
    return RestError(422, message, 42210000)


def _symbols(request: HttpRequest) -> list[str]:
    raw = request.query.get("symbols", "")
    symbols = [s.strip() for s in raw.split(",") if s.strip()]
    if not symbols:
        raise RestError(400, "missing symbols", 40010001)
    return symbols


class MarketDataApi:
    """Routes market-data requests to a :class:`~alpaca_di.emulator.bars.BarHistory`.

    Args:
        history: what the streams published.
        clock: the emulator's clock (default window ends, "recent" SIP data).
        plan_of: a key's plan feeds (``None`` = every feed), for the SIP check.
    """

    def __init__(
        self,
        history: BarHistory,
        clock: EmulatorClock,
        plan_of: Callable[[str], frozenset[str] | None],
    ) -> None:
        self._history = history
        self._clock = clock
        self._plan_of = plan_of

    @staticmethod
    def serves(path: str) -> bool:
        """True for a market-data path."""
        return path.startswith(DATA_PREFIXES)

    @staticmethod
    def needs_key(path: str) -> bool:
        """Stock and option data need a key pair; crypto data does not."""
        return not path.startswith("/v1beta3/crypto/")

    def handle(self, key_id: str | None, request: HttpRequest) -> tuple[int, Any]:
        """Serve one request; ``key_id`` is the caller's key (``None``: anonymous crypto)."""
        if request.method != "GET":
            raise RestError(405, "method not allowed", 40510000)
        parts = request.path.rstrip("/").split("/")[1:]
        version, group, rest = parts[0], parts[1], parts[2:]
        if version == "v2" and group == "stocks":
            return self._stocks(key_id, rest, request)
        if version == "v1beta3" and group == "crypto" and rest:
            if rest[0] not in _CRYPTO_LOCATIONS:
                raise RestError(404, f"unknown crypto location {rest[0]!r}", 40410000)
            return self._crypto(rest[1:], request)
        if version == "v1beta1" and group == "options":
            return self._options(rest, request)
        raise RestError(404, f"endpoint not found: GET {request.path}", 40410000)

    # ------------------------------------------------------------------ per asset class

    def _stocks(self, key_id: str | None, rest: list[str], request: HttpRequest) -> tuple[int, Any]:
        if rest == ["bars"]:
            self._check_feed(key_id, request)
            return 200, self._bars("stock", _symbols(request), request)
        if len(rest) == 2 and rest[1] == "latest" and rest[0] in _LATEST_KEYS:
            return 200, self._latest("stock", rest[0], _symbols(request))
        if len(rest) == 2 and rest[1] == "bars":
            self._check_feed(key_id, request)
            body = self._bars("stock", [rest[0]], request)
            return 200, {
                "bars": body["bars"].get(rest[0], []),
                "symbol": rest[0],
                "next_page_token": body["next_page_token"],
            }
        if len(rest) == 3 and rest[2] == "latest" and rest[1] in _LATEST_KEYS:
            type_code, singular = _LATEST_KEYS[rest[1]]
            found = self._history.latest("stock", type_code, rest[0])
            if found is None:
                raise RestError(404, f"no {singular} found for {rest[0]}", 40410000)
            return 200, {"symbol": rest[0], singular: found}
        raise RestError(404, f"endpoint not found: GET {request.path}", 40410000)

    def _crypto(self, rest: list[str], request: HttpRequest) -> tuple[int, Any]:
        if rest == ["bars"]:
            return 200, self._bars("crypto", _symbols(request), request)
        if len(rest) == 2 and rest[0] == "latest" and rest[1] in _LATEST_KEYS:
            return 200, self._latest("crypto", rest[1], _symbols(request))
        raise RestError(404, f"endpoint not found: GET {request.path}", 40410000)

    def _options(self, rest: list[str], request: HttpRequest) -> tuple[int, Any]:
        if rest == ["bars"]:
            return 200, self._bars("option", _symbols(request), request)
        if len(rest) == 2 and rest[1] == "latest" and rest[0] in ("quotes", "trades"):
            return 200, self._latest("option", rest[0], _symbols(request))
        raise RestError(404, f"endpoint not found: GET {request.path}", 40410000)

    # ------------------------------------------------------------------ answers

    def _bars(self, kind: str, symbols: list[str], request: HttpRequest) -> dict[str, Any]:
        query = request.query
        try:
            timeframe = Timeframe.parse(query.get("timeframe", ""))
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        start_ns, end_ns = self._window(request)
        limit = self._limit(query.get("limit"))
        sort = query.get("sort") or "asc"
        if sort not in ("asc", "desc"):
            raise _invalid(f"invalid sort {sort!r}: use asc or desc")
        try:
            bars, token = self._history.query(
                kind,
                symbols,
                timeframe,
                start_ns=start_ns,
                end_ns=end_ns,
                limit=limit,
                descending=sort == "desc",
                page_token=query.get("page_token") or None,
            )
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        return {"bars": bars, "next_page_token": token}

    def _latest(self, kind: str, what: str, symbols: list[str]) -> dict[str, Any]:
        type_code, _ = _LATEST_KEYS[what]
        found = {s: self._history.latest(kind, type_code, s) for s in dict.fromkeys(symbols)}
        return {what: {s: value for s, value in found.items() if value is not None}}

    def _window(self, request: HttpRequest) -> tuple[int, int]:
        now = self._clock.now_ns()
        start_ns = self._time(request, "start", new_york_midnight_ns(now))
        end_ns = self._time(request, "end", now)
        if end_ns < start_ns:
            raise _invalid("end should not be before start")
        return start_ns, end_ns

    @staticmethod
    def _time(request: HttpRequest, name: str, default: int) -> int:
        text = request.query.get(name)
        if not text:
            return default
        try:
            return to_ns(to_datetime(text))
        except ValueError:
            raise _invalid(f"invalid {name}: {text!r} is not RFC 3339") from None

    @staticmethod
    def _limit(text: str | None) -> int:
        if not text:
            return _DEFAULT_LIMIT
        try:
            limit = int(text)
        except ValueError:
            raise _invalid(f"invalid limit {text!r}") from None
        if not 1 <= limit <= _MAX_LIMIT:
            raise _invalid(f"invalid limit {limit}: use 1..{_MAX_LIMIT}")
        return limit

    def _check_feed(self, key_id: str | None, request: HttpRequest) -> None:
        feed = request.query.get("feed") or None
        if feed is None:
            return
        if feed not in _STOCK_FEEDS:
            raise _invalid(f"invalid feed {feed!r}: use one of {', '.join(_STOCK_FEEDS)}")
        plan = self._plan_of(key_id) if key_id else None
        if feed == "sip" and plan is not None and "sip" not in plan:
            _, end_ns = self._window(request)
            if end_ns > self._clock.now_ns() - _SIP_DELAY_NS:
                raise RestError(403, "subscription does not permit querying recent SIP data")
