"""rich is an extra of the demo's view: the library and a container run without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from alpaca_di.testing import AlpacaEmulator
from alpaca_di.testing.messages import quote

# None in sys.modules makes ``import rich`` (and every ``rich.*``) raise ImportError,
# as on a machine where the extra was never installed.
_BLOCK_RICH = "import sys; sys.modules['rich'] = None\n"

_CONTAINER = """
import sys
from alpaca_di import AlpacaContainer
from alpaca_di.testing import Recorder

container = AlpacaContainer()
container.config.from_dict({{
    "api_key": "PKNORICH00000001", "secret_key": "no-rich-secret",
    "data_stream_url": "{ws_url}", "trading_stream_url": "{trading_url}", "api_url": "{api_url}",
}})
container.init_resources()
try:
    recorder = Recorder()
    with container.stock_stream().subscribe(recorder, quotes=["AAPL"]) as sub:
        sub.wait_confirmed(30)
        print("confirmed", flush=True)
        sys.stdin.readline()
        [received] = recorder.wait_for(1, 30)
        print("received", received.symbol, received.bid_price, flush=True)
finally:
    container.shutdown_resources()
assert "rich" not in [name.split(".")[0] for name in sys.modules if sys.modules[name] is not None]
"""


def test_the_package_imports_and_a_container_runs_without_rich() -> None:
    with AlpacaEmulator() as emu:
        script = _BLOCK_RICH + textwrap.dedent(_CONTAINER).format(
            ws_url=emu.ws_url, trading_url=emu.trading_stream_url, api_url=emu.api_url
        )
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdin is not None
        line = process.stdout.readline()
        while line and line != "confirmed\n":  # structlog may print to stdout as well
            line = process.stdout.readline()
        assert line == "confirmed\n", process.stderr.read() if process.stderr else ""
        emu.publish("/v2/iex", [quote("AAPL", bid=10.0, ask=10.2)], key_id="PKNORICH00000001")
        out, err = process.communicate("\n", timeout=60)
    assert process.returncode == 0, err
    assert "received AAPL 10.0" in out


def test_the_demo_says_how_to_get_the_extra() -> None:
    script = _BLOCK_RICH + "from alpaca_di.cli import main\nsys.exit(main(['demo']))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "alpaca-di[demo]" in done.stderr
