"""The exceptions alpaca-di raises.

Every error the library raises derives from :class:`AlpacaDIError`, so one
``except AlpacaDIError`` catches them all. Server error codes from Alpaca's
streams map to the subclasses below through :func:`error_for_code`::

    from alpaca_di.errors import AuthenticationError, error_for_code

    err = error_for_code(402, "auth failed")
    assert isinstance(err, AuthenticationError)

No message built here ever contains a secret key: callers pass the server's
message and, at most, a masked key fingerprint.

The hierarchy::

    AlpacaDIError
    ├── ConfigurationError (ValueError)     a setting is missing or invalid
    ├── ProtocolError (ValueError)          a frame that does not follow the protocol
    ├── ConnectionClosedError               the hub or subscription is closed
    │   └── ServiceClosedError              a call on a closed service or hub (resolve it again)
    ├── SubscriptionOverflowError           overflow="error" and the queue filled up
    ├── RedisUnavailableError (ConnectionError)   sharing="redis" and Redis unreachable
    ├── AlpacaAPIError                      a REST call failed
    └── ServerError                         an error message from Alpaca's stream server
        ├── AuthenticationError             402
        ├── SymbolLimitError                405
        ├── ConnectionLimitError            406
        ├── SlowClientError                 407
        └── InsufficientSubscriptionError   409
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "AlpacaAPIError",
    "AlpacaDIError",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectionClosedError",
    "ConnectionLimitError",
    "InsufficientSubscriptionError",
    "ProtocolError",
    "RedisUnavailableError",
    "ServerError",
    "ServiceClosedError",
    "SlowClientError",
    "SubscriptionOverflowError",
    "SymbolLimitError",
    "describe_error",
    "error_for_code",
]


class AlpacaDIError(Exception):
    """Base class of every exception raised by alpaca-di."""


class ConfigurationError(AlpacaDIError, ValueError):
    """A setting is missing or invalid; the message names the field and its env var.

    Attributes:
        fields: the settings fields at fault (``("feed",)``), when known.
        env_vars: their environment variables (``("ALPACA_FEED",)``), in the same order.

    Example::

        try:
            AlpacaSettings()
        except ConfigurationError as exc:
            print(exc.env_vars)        # ('ALPACA_FEED',) for ALPACA_FEED=sipp
    """

    def __init__(
        self, message: str, *, fields: Iterable[str] = (), env_vars: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        self.fields: tuple[str, ...] = tuple(fields)
        self.env_vars: tuple[str, ...] = tuple(env_vars)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_configuration_error, (str(self), self.fields, self.env_vars))


def _configuration_error(
    message: str, fields: tuple[str, ...], env_vars: tuple[str, ...]
) -> ConfigurationError:
    return ConfigurationError(message, fields=fields, env_vars=env_vars)


class ProtocolError(AlpacaDIError, ValueError):
    """A frame from the server could not be decoded or does not follow the protocol."""


class ConnectionClosedError(AlpacaDIError):
    """The hub or subscription was closed and can no longer be used."""


class ServiceClosedError(ConnectionClosedError):
    """A call on a service or hub that was closed (its container shut down).

    Every call on a closed ``PricingService``, ``TradingService``, ``AlpacaManager``
    or ``StreamHub`` raises it; iterators over a closed subscription still end
    quietly. The message names the service and says how to get a working one::

        pricing = container.pricing_service()
        container.shutdown_resources()
        pricing.price("AAPL")
        # ServiceClosedError: the PricingService is closed (its container was shut
        # down or it was closed); resolve it again from the container
        # (container.pricing_service())

    Attributes:
        service: what was closed (``"PricingService"``, ``"stock StreamHub"``...).
    """

    def __init__(self, service: str, provider: str | None = None) -> None:
        self.service = service
        again = f" (container.{provider}())" if provider else ""
        super().__init__(
            f"the {service} is closed (its container was shut down or it was closed); "
            f"resolve it again from the container{again}"
        )


class SubscriptionOverflowError(AlpacaDIError):
    """The queue of a subscription with ``overflow="error"`` filled up; it was closed."""


class RedisUnavailableError(AlpacaDIError, ConnectionError):
    """Redis could not be reached when ``sharing='redis'`` was set up."""


class ServerError(AlpacaDIError):
    """An error message sent by Alpaca's stream server (``{"T": "error", ...}``).

    Attributes:
        code: Alpaca's numeric error code (402, 405, 406, ...).
        server_message: the server's own text, verbatim.
    """

    def __init__(self, code: int, server_message: str, detail: str = "") -> None:
        self.code = code
        self.server_message = server_message
        text = f"{server_message} ({code})"
        super().__init__(f"{text}: {detail}" if detail else text)


class AuthenticationError(ServerError):
    """402: the key pair was rejected. Never retried: the keys will not get better."""


class SymbolLimitError(ServerError):
    """405: the subscription would exceed the plan's symbol limit.

    Attributes:
        symbols: the ``(channel, symbol)`` pairs that were rejected and rolled back.
    """

    def __init__(
        self,
        code: int,
        server_message: str,
        detail: str = "",
        symbols: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.symbols = tuple(symbols)
        if self.symbols and not detail:
            listed = ", ".join(f"{channel}:{symbol}" for channel, symbol in self.symbols[:20])
            more = f" and {len(self.symbols) - 20} more" if len(self.symbols) > 20 else ""
            detail = f"rejected and rolled back {listed}{more}"
        super().__init__(code, server_message, detail)


class ConnectionLimitError(ServerError):
    """406: another session already holds this key's slot on this endpoint.

    alpaca-di retries it with backoff inside a grace window (Alpaca reaps a dead
    socket after about 90 s) and raises this error only when the window is over.
    """


class SlowClientError(ServerError):
    """407: the server dropped us for reading too slowly."""


class InsufficientSubscriptionError(ServerError):
    """409: the account's plan does not include this feed (for example ``sip``)."""


class AlpacaAPIError(AlpacaDIError):
    """A REST call to Alpaca failed.

    Attributes:
        status_code: the HTTP status, when there was a response.
        api_message: the API's own message.
    """

    def __init__(self, api_message: str, status_code: int | None = None) -> None:
        self.status_code = status_code
        self.api_message = api_message
        prefix = f"HTTP {status_code}: " if status_code is not None else ""
        super().__init__(f"{prefix}{api_message}")


_BY_CODE: dict[int, type[ServerError]] = {
    402: AuthenticationError,
    405: SymbolLimitError,
    406: ConnectionLimitError,
    407: SlowClientError,
    409: InsufficientSubscriptionError,
}


def error_for_code(code: int, message: str, *, feed: str | None = None) -> ServerError:
    """Build the exception for an Alpaca stream error code.

    ``feed`` makes the 409 message name the feed and the one to use instead::

        error_for_code(409, "insufficient subscription", feed="sip")
        # InsufficientSubscriptionError("insufficient subscription (409): the plan of
        # this account does not include the 'sip' feed; use 'iex' instead (set ALPACA_FEED=iex)")
    """
    cls = _BY_CODE.get(code, ServerError)
    detail = ""
    if cls is InsufficientSubscriptionError and feed:
        instead, variable = (
            ("indicative", "ALPACA_OPTION_FEED")
            if feed == "opra"
            else (
                "iex",
                "ALPACA_FEED",
            )
        )
        detail = (
            f"the plan of this account does not include the {feed!r} feed; "
            f"use {instead!r} instead (set {variable}={instead})"
        )
    elif cls is ConnectionLimitError:
        detail = (
            "another connection with this key is open on this endpoint "
            "(another process, or a socket Alpaca has not reaped yet)"
        )
    elif cls is AuthenticationError:
        detail = "check APCA_API_KEY_ID / APCA_API_SECRET_KEY and the paper/live setting"
    return cls(code, message, detail)


def describe_error(error: BaseException | None) -> str | None:
    """``"TypeName: message"`` (or just the type name), for logs and health; ``None`` for ``None``.

    Example::

        describe_error(TimeoutError("no pong"))   # 'TimeoutError: no pong'
    """
    if error is None:
        return None
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
