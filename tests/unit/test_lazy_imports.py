"""``import alpaca_di`` is cheap: public names load on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import alpaca_di


def test_every_public_name_resolves_from_its_module() -> None:
    assert sorted(alpaca_di._EXPORTS) == sorted(alpaca_di.__all__)
    for name in alpaca_di.__all__:
        assert getattr(alpaca_di, name).__name__ == name or name == "lifespan"


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        alpaca_di.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return set(out.split())


def test_importing_the_package_or_the_cli_loads_neither_alpaca_py_nor_pandas() -> None:
    for code in (
        "import alpaca_di",
        "import alpaca_di.cli.commands",
        "from alpaca_di import AlpacaSettings; AlpacaSettings",
        "from alpaca_di.protocol import StreamKind",
        "from alpaca_di.transport import ConnectionOptions",
        "from alpaca_di import AlpacaContainer, AlpacaSettings; AlpacaContainer()",
    ):
        loaded = _modules_after(code)
        assert "alpaca" not in loaded, code
        assert "pandas" not in loaded, code
        assert "redis" not in loaded, code
    assert "websockets" not in _modules_after("from alpaca_di import AlpacaSettings")


def test_the_command_line_parser_loads_no_logging_library_nor_rich() -> None:
    """``alpaca-di --help`` is fast: structlog (and the rich it pulls in) load with a command."""
    loaded = _modules_after("from alpaca_di.cli.commands import build_parser; build_parser()")
    assert "structlog" not in loaded
    assert "rich" not in loaded


def test_lazy_package_names_still_resolve() -> None:
    from alpaca_di.protocol import parse
    from alpaca_di.transport import Connection, check_url

    assert callable(parse)
    assert Connection.__name__ == "Connection"
    assert callable(check_url)


def test_alpaca_py_loads_with_the_first_hub_not_at_its_first_message() -> None:
    """The reader's loop never pays alpaca-py's import (about 0.7 s) mid-stream."""
    loaded = _modules_after(
        "from alpaca_di import ConnectionRegistry, Credentials\n"
        "lease = ConnectionRegistry().acquire(Credentials('PKLAZY0000000001', 'lazy-secret'),"
        " 'stock', 'wss://stream.data.alpaca.markets/v2/iex')\n"
        "lease.release()"
    )
    assert "alpaca.data.models" in loaded
