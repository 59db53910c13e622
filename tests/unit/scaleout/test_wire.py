"""The Redis wire schema of the scale-out: names and encodings, without a Redis."""

from __future__ import annotations

import pytest

from alpaca_di.credentials import Credentials
from alpaca_di.errors import AuthenticationError, ProtocolError
from alpaca_di.scaleout.wire import (
    LeaderStatus,
    SharingKeys,
    account_tag,
    decode_batch,
    decode_demand,
    decode_update_entry,
    demand_channel_pattern,
    encode_batch,
    encode_demand,
    error_from_record,
    error_record,
    stream_position,
    tag_of_channel,
    update_entry,
)

URL = "wss://stream.data.alpaca.markets/v2/iex"


def test_every_name_of_a_group_carries_its_hash_tag() -> None:
    keys = SharingKeys("app", "abc123")
    names = [keys.leader, keys.epoch, keys.status, keys.members, keys.demand("m1"),
             keys.updates, keys.cursor("c1"), keys.data_channel, keys.status_channel,
             keys.demand_channel]
    assert all(name.startswith("app:{abc123}:") for name in names)
    assert len(set(names)) == len(names)
    assert tag_of_channel(keys.demand_channel.encode()) == "abc123"
    assert tag_of_channel(b"no-tag-here") is None


def test_the_demand_pattern_matches_the_demand_channel_and_escapes_the_prefix() -> None:
    assert demand_channel_pattern("app") == "app:*:ch:demand"
    assert demand_channel_pattern("a*b?[c]") == "a\\*b\\?\\[c\\]:*:ch:demand"


def test_the_account_tag_reveals_neither_key_nor_secret_and_is_stable() -> None:
    creds = Credentials("PKTESTKEY1234", "s3cret-value")
    tag = account_tag(creds, URL)
    assert tag == account_tag(Credentials("PKTESTKEY1234", "s3cret-value"), URL)
    assert tag != account_tag(Credentials("PKTESTKEY1234", "other"), URL)
    assert tag != account_tag(creds, URL.replace("iex", "sip"))
    assert "PKTESTKEY1234" not in tag
    assert "s3cret" not in tag


def test_demand_and_batches_round_trip_and_garbage_is_a_protocol_error() -> None:
    assert decode_demand(encode_demand(3, [("quotes", "AAPL")])) == (3, {("quotes", "AAPL")})
    epoch, sent_ms, messages = decode_batch(encode_batch(7, [["quotes", "AAPL", {"S": "AAPL"}]]))
    assert (epoch, messages) == (7, [["quotes", "AAPL", {"S": "AAPL"}]])
    assert sent_ms > 0
    with pytest.raises(ProtocolError):
        decode_demand(b"\xc1")
    with pytest.raises(ProtocolError):
        decode_batch(b"\xc1")


def test_a_trade_update_entry_carries_epoch_and_sequence() -> None:
    fields = update_entry(7, 3, "trade_updates", "AAPL", {"event": "fill"})
    read_back = {key.encode(): value if isinstance(value, bytes) else str(value).encode()
                 for key, value in fields.items()}
    assert decode_update_entry(read_back) == (7, 3, ["trade_updates", "AAPL", {"event": "fill"}])
    with pytest.raises(ProtocolError):
        decode_update_entry({b"e": b"1"})
    with pytest.raises(ProtocolError):
        decode_update_entry(None)


def test_stream_positions_compare_numerically() -> None:
    assert stream_position("9-5") < stream_position("10-0")
    assert stream_position("10") == (10, 0)


def test_leader_status_and_error_records_round_trip() -> None:
    status = LeaderStatus("web-1:42:ab", 7, "failed", {"quotes": ("AAPL",)},
                          rejected=(("quotes", "ZZZZ", 405, "symbol limit exceeded"),),
                          error=error_record(AuthenticationError(402, "auth failed")),
                          seen={"m1": 2})
    assert LeaderStatus.decode(status.encode()) == status
    assert isinstance(error_from_record(status.error), AuthenticationError)
    with pytest.raises(ProtocolError):
        LeaderStatus.decode(b"\x00")
