"""``python -m alpaca_di``: the same as the ``alpaca-di`` command.

Example::

    python -m alpaca_di emulator --rate 100
"""

from __future__ import annotations

import sys

from alpaca_di.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
