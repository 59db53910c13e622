"""Per-message cost of each step from a frame of quotes to alpaca-py models (µs/message).

Not part of ``make bench``: a tool showing where the time of the model path goes,
without sockets, threads or consumers. One 100-quote frame (Alpaca's frame size;
each quote's nanoseconds differ) goes through each step many times; each figure
is the best of several repeats (the least disturbed by other programs), divided
by the number of messages::

    python -m benchmarks.profile_models
    python -m benchmarks.profile_models --repeat 9 --number 300

Steps: alpaca-py's own (msgpack into dicts, then ``DataStream._cast``), alpaca-di's
dict path (the codec's raw form, then ``parse``) and its model form (model
sources, then ``build``), each also split into decode and build.
"""

from __future__ import annotations

import argparse
import os
import timeit
from collections.abc import Callable
from typing import Any

__all__ = ["main", "steps"]

_FRAME_SIZE = 100


def _frame() -> bytes:
    import msgpack

    quotes = [
        {
            "T": "q",
            "S": "AAPL",
            "bx": "V",
            "bp": 189.5 + i / 100,
            "bs": 3,
            "ax": "Q",
            "ap": 189.6,
            "as": 4,
            "c": ["R"],
            "z": "C",
            "t": msgpack.Timestamp(1_760_000_000, 123_456_000 + 7 * i),
        }
        for i in range(_FRAME_SIZE)
    ]
    packed: bytes = msgpack.packb(quotes)
    return packed


def steps() -> dict[str, Callable[[], Any]]:
    """Each step as a function of no arguments that processes the whole frame once."""
    import msgpack
    from alpaca.data.live.websocket import DataStream

    from alpaca_di.protocol import DataBatch, DataStreamProtocol, StreamKind
    from alpaca_di.protocol.models import build, model_sources, parse

    frame = _frame()
    alpaca_py = DataStream.__new__(DataStream)
    alpaca_py._raw_data = False  # only its message -> model step is used
    dict_form = DataStreamProtocol(StreamKind.STOCK)
    model_form = DataStreamProtocol(StreamKind.STOCK)
    model_form.forms = frozenset({"model"})
    [raw_batch] = dict_form.receive(frame)
    [model_batch] = model_form.receive(frame)
    assert isinstance(raw_batch, DataBatch)
    assert isinstance(model_batch, DataBatch)
    assert model_batch.sources is not None
    sources = model_batch.sources
    messages = raw_batch.messages
    decoders = model_sources(StreamKind.STOCK)

    def alpaca_py_all() -> None:
        for message in msgpack.unpackb(frame):
            alpaca_py._cast(message)

    def dict_path_all() -> None:
        [batch] = dict_form.receive(frame)
        for channel, symbol, raw in batch.messages:  # type: ignore[union-attr]
            parse(channel, symbol, raw)

    def model_form_all() -> None:
        [batch] = model_form.receive(frame)
        for (channel, _, _), source in zip(batch.messages, batch.sources, strict=True):  # type: ignore[union-attr, arg-type]
            build(channel, source)

    return {
        "alpaca-py: msgpack -> dicts": lambda: msgpack.unpackb(frame),
        "alpaca-py: both": alpaca_py_all,
        "alpaca-di dicts: codec, raw form": lambda: dict_form.receive(frame),
        "alpaca-di dicts: parse (dict -> model)": lambda: [
            parse(channel, symbol, raw) for channel, symbol, raw in messages
        ],
        "alpaca-di dicts: both": dict_path_all,
        "alpaca-di model form: msgspec -> model sources": lambda: decoders.frame.decode(frame),
        "alpaca-di model form: codec, model form": lambda: model_form.receive(frame),
        "alpaca-di model form: build (source -> model)": lambda: [
            build("quotes", source) for source in sources
        ],
        "alpaca-di model form: both": model_form_all,
    }


def main(argv: list[str] | None = None) -> int:
    """Print µs per message of each step, with the machine's load."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_models")
    parser.add_argument("--repeat", type=int, default=7, help="repeats; the best one counts")
    parser.add_argument("--number", type=int, default=200, help="frames per repeat")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    figures: dict[str, float] = {}
    for name, step in steps().items():
        best = min(timeit.repeat(step, number=args.number, repeat=args.repeat))
        figures[name] = best / args.number / _FRAME_SIZE * 1e6
        print(f"{figures[name]:8.2f} µs/message  {name}")
    # _cast mutates its dict (``t`` becomes a datetime): it is timed with the decode only.
    cast = figures["alpaca-py: both"] - figures["alpaca-py: msgpack -> dicts"]
    print(f"{cast:8.2f} µs/message  alpaca-py: DataStream._cast (dict -> model; both - decode)")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
