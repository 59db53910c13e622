"""REST calls through alpaca-py's ``TradingClient``: errors named, the secret never shown.

Every REST call the services make goes through :func:`rest_call`::

    order = rest_call(client, lambda: client.get_order_by_id(order_id))

An ``alpaca.common.exceptions.APIError`` or a ``requests`` failure becomes an
:class:`~alpaca_di.errors.AlpacaAPIError` carrying Alpaca's message and HTTP
status, with the client's secret key replaced by ``<secret>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from alpaca.common.exceptions import APIError

from alpaca_di.errors import AlpacaAPIError

__all__ = ["rest_call"]

_T = TypeVar("_T")


def rest_call(client: Any, call: Callable[[], _T]) -> _T:
    """Run one alpaca-py REST call; errors become :class:`AlpacaAPIError` (no secret)."""
    try:
        return call()
    except APIError as exc:
        error = _api_error(exc, getattr(client, "_secret_key", None))
    except requests.RequestException as exc:
        error = AlpacaAPIError(
            _redact(f"request to Alpaca failed: {type(exc).__name__}: {exc}", client), None
        )
    raise error from None


def _api_error(exc: APIError, secret: Any) -> AlpacaAPIError:
    text = str(exc)
    message = text
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        message = str(body["message"])
    try:
        status = exc.status_code
    except Exception:
        status = None
    if isinstance(secret, str) and secret and secret in message:
        message = message.replace(secret, "<secret>")
    return AlpacaAPIError(message.strip() or "request failed", status)


def _redact(text: str, client: Any) -> str:
    secret = getattr(client, "_secret_key", None)
    if isinstance(secret, str) and secret and secret in text:
        return text.replace(secret, "<secret>")
    return text
