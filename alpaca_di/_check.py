"""Validation helpers shared by every layer: one rule, one home.

from alpaca_di._check import check_seconds

check_seconds("timeout", timeout)     # ValueError naming the argument and the value
"""

from __future__ import annotations

import ipaddress
import math

__all__ = [
    "check_seconds",
    "host_port",
    "is_loopback",
    "is_seconds",
    "is_word",
    "one_edit_apart",
]


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


def one_edit_apart(a: str, b: str) -> bool:
    """True when one insertion, deletion or substitution turns ``a`` into ``b``."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            rest = index + 1
            return a[index if len(a) < len(b) else rest :] == b[rest:]
    return True


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_port(item: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a pair; ValueError naming the item."""
    host, sep, port = item.rpartition(":")
    host = host.strip().removeprefix("[").removesuffix("]")
    if not sep or not host or not port.strip().isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r} is not host:port (for example 10.0.0.5:26379)")
    return host, int(port)
