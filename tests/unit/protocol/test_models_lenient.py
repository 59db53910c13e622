"""Values alpaca-py's models do not know never lose a message: lenient models."""

from __future__ import annotations

import copy
import enum
from typing import Any, get_args

import pytest
from alpaca.trading.models import Order, TradeUpdate
from protocol_samples import CHANNEL_OF, SAMPLES
from pydantic import BaseModel

from alpaca_di.errors import ProtocolError
from alpaca_di.protocol.models import is_lenient, parse

# Made up for the test: no alpaca-py version has them.
NEW_VALUE = "zz_added_by_alpaca_later"


def _is_enum_field(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return True
    return any(_is_enum_field(arg) for arg in get_args(annotation))


def _enum_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if _is_enum_field(field.annotation)]


ORDER_ENUM_FIELDS = _enum_fields(Order)


def test_the_order_model_has_enum_fields_to_test() -> None:
    assert {"status", "asset_class", "time_in_force", "order_class"} <= set(ORDER_ENUM_FIELDS)


@pytest.mark.parametrize("field", ORDER_ENUM_FIELDS)
def test_a_trade_update_with_an_unknown_order_value_is_still_a_trade_update(field: str) -> None:
    raw = copy.deepcopy(SAMPLES["trade_update"])
    strict = parse("trade_updates", "AAPL", raw)
    raw["order"][field] = NEW_VALUE
    update = parse("trade_updates", "AAPL", raw)
    assert isinstance(update, TradeUpdate)
    assert isinstance(update.order, Order)
    assert is_lenient(update)
    assert not is_lenient(strict)
    assert getattr(update.order, field) == NEW_VALUE
    assert isinstance(strict, TradeUpdate)
    for name in Order.model_fields:
        if name != field:
            assert getattr(update.order, name) == getattr(strict.order, name), name
    for name in TradeUpdate.model_fields:
        if name != "order":
            assert getattr(update, name) == getattr(strict, name), name


def test_every_order_value_unknown_at_once_and_a_new_event() -> None:
    raw = copy.deepcopy(SAMPLES["trade_update"])
    for field in ORDER_ENUM_FIELDS:
        raw["order"][field] = f"{NEW_VALUE}_{field}"
    raw["event"] = NEW_VALUE
    update = parse("trade_updates", "AAPL", raw)
    assert isinstance(update, TradeUpdate)
    assert update.event == NEW_VALUE
    assert str(update.order.id) == raw["order"]["id"]
    assert update.order.status == f"{NEW_VALUE}_status"


def test_a_bad_value_of_another_kind_is_still_malformed() -> None:
    raw = copy.deepcopy(SAMPLES["trade_update"])
    raw["order"]["status"] = NEW_VALUE
    raw["timestamp"] = "yesterday"
    with pytest.raises(ProtocolError, match="timestamp"):
        parse("trade_updates", "AAPL", raw)


def test_a_missing_order_is_still_malformed() -> None:
    raw = {key: value for key, value in SAMPLES["trade_update"].items() if key != "order"}
    with pytest.raises(ProtocolError, match="order"):
        parse("trade_updates", "AAPL", raw)


_DATA_CASES = [
    (name, key)
    for name, sample in SAMPLES.items()
    if CHANNEL_OF[name] not in ("trade_updates", "lulds")
    for key in sample
    if key in ("x", "z", "a", "bx", "ax", "tks") and name != "orderbook"  # codes, not asks
]


@pytest.mark.parametrize(("name", "key"), _DATA_CASES)
def test_market_data_with_an_unknown_code_is_delivered(name: str, key: str) -> None:
    raw = {**SAMPLES[name], key: NEW_VALUE}
    channel = CHANNEL_OF[name]
    model = parse(channel, "AAPL", raw)
    strict = parse(channel, "AAPL", SAMPLES[name])
    assert type(strict) in type(model).__mro__
    assert NEW_VALUE in {str(value) for value in vars(model).values()} or not is_lenient(model)
