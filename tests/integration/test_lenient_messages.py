"""Values alpaca-py does not know never lose a message, over real sockets (issue 12, item 5)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from alpaca.trading.models import TradeUpdate

from alpaca_di import AlpacaContainer, ConnectionRegistry
from alpaca_di.protocol.models import is_lenient
from alpaca_di.testing import AlpacaEmulator, Recorder
from alpaca_di.testing.fakes import trade_update_message
from alpaca_di.testing.messages import quote

KEY = "PKLENIENT0000001"
SECRET = "lenient-secret-do-not-leak"
DEADLINE = 10.0
IEX = "/v2/iex"
# Made up for the test: no alpaca-py version has any of them.
UNKNOWN = {
    "status": "zz_pending_review",
    "asset_class": "zz_us_future",
    "order_type": "zz_market_on_close",
    "type": "zz_market_on_close",
    "time_in_force": "zz_gtd",
}


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emulator:
        yield emulator


@pytest.fixture
def container(emu: AlpacaEmulator) -> Iterator[AlpacaContainer]:
    container = AlpacaContainer()
    container.config.from_dict(
        {
            "api_key": KEY,
            "secret_key": SECRET,
            "data_stream_url": emu.ws_url,
            "trading_stream_url": emu.trading_stream_url,
            "api_url": emu.api_url,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
        }
    )
    registry = ConnectionRegistry()
    container.registry.override(registry)
    yield container
    container.shutdown_resources()
    registry.close_all()


def _with_unknown_values(update: dict[str, Any]) -> dict[str, Any]:
    update["order"].update(UNKNOWN)
    update["event"] = "zz_new_event"
    return update


def test_unknown_enum_values_reach_every_consumer_and_resolve_wait_for_order(
    container: AlpacaContainer, emu: AlpacaEmulator
) -> None:
    trading = container.trading_service()
    typed, raw = Recorder(), Recorder()
    hub = container.trading_stream()
    with hub.subscribe(typed, trade_updates=True) as typed_sub, hub.subscribe(
        raw, trade_updates=True, raw=True
    ) as raw_sub:
        typed_sub.wait_confirmed(DEADLINE)
        raw_sub.wait_confirmed(DEADLINE)
        trading.listen(DEADLINE)
        fill = trade_update_message("fill", symbol="AAPL", price=190.0)
        fill["order"].update(UNKNOWN)
        odd_event = _with_unknown_values(trade_update_message("new", symbol="MSFT"))
        emu.push_trade_update(KEY, fill)
        emu.push_trade_update(KEY, odd_event)

        result = trading.wait_for_order(fill["order"]["id"], timeout=DEADLINE)
        [first, second] = typed.wait_for(2, DEADLINE)
        [raw_first, raw_second] = raw.wait_for(2, DEADLINE)

    assert result.price == 190.0
    for update in (result, first, second):
        assert isinstance(update, TradeUpdate)
        assert is_lenient(update)
        assert update.order.status in (UNKNOWN["status"],)
        assert update.order.time_in_force == UNKNOWN["time_in_force"]
    assert str(first.order.id) == fill["order"]["id"]
    assert second.event == "zz_new_event"
    assert raw_first["order"]["status"] == UNKNOWN["status"]
    assert raw_second["event"] == "zz_new_event"
    health = hub.health()
    assert health.malformed == 0
    assert health.messages_dropped == 0


def test_raw_subscribers_get_a_message_that_no_model_can_be_built_from(
    container: AlpacaContainer, emu: AlpacaEmulator
) -> None:
    hub = container.stock_stream()
    typed, raw = Recorder(), Recorder()
    with hub.subscribe(typed, quotes=["AAPL"]) as typed_sub, hub.subscribe(
        raw, quotes=["AAPL"], raw=True
    ) as raw_sub:
        typed_sub.wait_confirmed(DEADLINE)
        raw_sub.wait_confirmed(DEADLINE)
        bad = {**quote("AAPL", bid=10.0, ask=10.2), "bp": "not-a-price"}
        good = quote("AAPL", bid=11.0, ask=11.2)
        emu.send_raw(IEX, msgpack.packb([bad, good], datetime=True), key_id=KEY)
        [raw_bad, raw_good] = raw.wait_for(2, DEADLINE)
        [typed_good] = typed.wait_for(1, DEADLINE)

    assert raw_bad["bp"] == "not-a-price"
    assert raw_good["bp"] == 11.0
    assert typed_good.bid_price == 11.0
    assert hub.health().malformed == 1
