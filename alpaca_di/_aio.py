"""Small asyncio helpers shared by every layer: one copy of each.

from alpaca_di._aio import running_loop, settle

loop = running_loop()                 # the running loop, or None outside one
settle(loop, future, value)           # resolve a future from any thread
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["is_async_callable", "running_loop", "settle", "wake"]

_T = TypeVar("_T")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or ``None`` when there is none."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def wake(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` with ``None`` unless it is already done (on its own loop)."""
    if not future.done():
        future.set_result(None)


def settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[_T], value: _T) -> None:
    """Resolve ``future`` with ``value`` on ``loop``, from any thread.

    A closed loop means nobody waits on the future any more: nothing to do.
    """

    def resolve() -> None:
        if not future.done():
            future.set_result(value)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:
        pass


def is_async_callable(function: Callable[..., Any]) -> bool:
    """True for ``async def`` functions, partials of them and objects with an async ``__call__``."""
    while isinstance(function, functools.partial):
        function = function.func
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 - instances with async __call__
    return call is not None and inspect.iscoroutinefunction(call)
