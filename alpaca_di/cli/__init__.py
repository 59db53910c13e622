"""The ``alpaca-di`` command line (``alpaca-di --help``)."""

from alpaca_di.cli.commands import main

__all__ = ["main"]
