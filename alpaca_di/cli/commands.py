"""The ``alpaca-di`` command line: a registry of subcommands.

Run ``alpaca-di --help`` (or ``python -m alpaca_di --help``). Built in:

* ``alpaca-di emulator`` (:mod:`alpaca_di.cli.emulator`), ``demo``, ``health`` and
  ``gateway``: each in its own module, whose heavy imports happen inside ``run``.

Adding a subcommand (``demo``, ``health``, ...) takes one :func:`register` call at
the bottom of this module, with a ``configure`` function that adds its arguments
and a ``run`` function returning the exit code::

    def _configure_demo(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--duration", type=float, default=10.0)

    def _run_demo(args: argparse.Namespace) -> int:
        from alpaca_di.cli.demo.run import run_demo      # import lazily: keep --help fast
        return run_demo(args)

    register(Command("demo", "run the demo against the emulator", _configure_demo, _run_demo))

Only the CLI configures logging (structlog to stderr, so stdout stays parseable).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Command", "build_parser", "commands", "main", "register"]


@dataclass(frozen=True)
class Command:
    """One ``alpaca-di`` subcommand.

    Attributes:
        name: the word on the command line (``emulator``).
        help: one line for ``alpaca-di --help``.
        configure: adds the subcommand's arguments to its parser.
        run: does the work; returns the process exit code.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_COMMANDS: dict[str, Command] = {}


def register(command: Command) -> None:
    """Add a subcommand; registering a name twice is a programming error.

    Example::

        register(Command("health", "print a health report", _configure, _run))
    """
    if command.name in _COMMANDS:
        raise ValueError(f"alpaca-di subcommand {command.name!r} is already registered")
    _COMMANDS[command.name] = command


def commands() -> dict[str, Command]:
    """The registered subcommands by name (a copy)."""
    return dict(_COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="alpaca-di",
        description="One shared Alpaca WebSocket connection per account and endpoint.",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="log level of messages written to stderr (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS.values():
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(child)
        child.set_defaults(_run=command.run)
    return parser


def _configure_logging(level: str) -> None:
    import structlog  # here, not at the top: ``--help`` never needs it (a fifth of a second)

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``alpaca-di`` and ``python -m alpaca_di``; returns the exit code.

    Example::

        main(["emulator", "--port", "8765", "--rate", "100"])
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.log_level)
    return run(args)


# More subcommands register here (see the module docstring). ``demo``, ``health`` and
# ``gateway`` live in their own modules whose heavy imports happen inside ``run``.
from alpaca_di.cli import emulator as _emulator  # noqa: E402 - registered after the registry exists
from alpaca_di.cli import gateway as _gateway  # noqa: E402
from alpaca_di.cli import health as _health  # noqa: E402
from alpaca_di.cli.demo import run as _demo  # noqa: E402

register(
    Command(
        "emulator",
        "run the loopback Alpaca emulator (market data, trading stream, REST)",
        _emulator.configure,
        _emulator.run,
    )
)
register(
    Command(
        "demo",
        "run the demo: seven components sharing one connection per endpoint (emulator or --live)",
        _demo.configure,
        _demo.run,
    )
)
register(
    Command(
        "health",
        "ask a running app's health endpoint (--url), or connect the configured streams; "
        "print a HealthReport as JSON",
        _health.configure,
        _health.run,
    )
)
register(
    Command(
        "gateway",
        "hold the shared Alpaca sockets for every process of a sharing=redis deployment",
        _gateway.configure,
        _gateway.run,
    )
)
