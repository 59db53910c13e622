"""Validation helpers shared by every layer: one rule, one home.

from alpaca_di._check import check_seconds

check_seconds("timeout", timeout)     # ValueError naming the argument and the value
"""

from __future__ import annotations

import math

__all__ = ["check_seconds", "is_seconds", "is_word"]


def is_seconds(value: object) -> bool:
    """True for a positive, finite number of seconds (``bool`` is not a number here)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < math.inf


def is_word(value: object) -> bool:
    """True for a non-empty string without whitespace (a key prefix, a reader id)."""
    return isinstance(value, str) and bool(value) and not any(c.isspace() for c in value)


def check_seconds(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive, finite number of seconds."""
    if not is_seconds(value):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
