"""Logging for production: one opt-in call, JSON lines or readable console, secret-free.

alpaca-di never configures logging by itself (that is the application's right);
an application that wants a sensible setup calls :func:`configure_logging` once,
at start::

    import alpaca_di

    alpaca_di.configure_logging()                 # JSON lines unless stderr is a terminal
    alpaca_di.configure_logging(json=True, level="warning")

structlog events and the standard library's ``logging`` records (uvicorn's,
alpaca-py's, the application's) then share one format, written to ``stream``
(default ``sys.stderr``): JSON objects one per line (``timestamp``, ``level``,
``logger``, ``event`` and the bound fields), or structlog's console renderer in
development. Every event passes :func:`mask_secrets` first.

It respects what the application set up, like :func:`logging.basicConfig`: if the
root logger already has handlers, they are kept and none is added (records reach
them with structlog events rendered as text); if structlog was configured by
someone else, that configuration is kept. ``force=True`` replaces both. Calling it
again replaces only what an earlier call installed (idempotent).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from pydantic import SecretStr

from alpaca_di.credentials import Credentials, mask_key, mask_url

__all__ = ["LoggingSetup", "configure_logging", "mask_secrets"]

_MASK = "**********"
_SECRET_NAMES = re.compile(
    r"secret|passw|token|authorization|credential|private_key|api_signature|cookie", re.I
)
_KEY_NAMES = re.compile(r"^(?:apca[_-]api[_-])?(?:api[_-])?key(?:[_-]id)?$", re.I)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# Alpaca key ids (PK... paper, AK... live, CK... broker) and secret keys (40 letters/digits).
_KEY_ID = re.compile(r"\b[APC]K[A-Z0-9]{14,}\b")
_SECRET_SHAPE = re.compile(r"\b[A-Za-z0-9]{40}\b")
_SECRET_ASSIGNMENT = re.compile(
    r"""(?P<name>["']?\b[\w-]*(?:secret|passw|token|authorization)[\w-]*["']?\s*[:=]\s*)"""
    r"""(?P<quote>["']?)(?P<value>[^\s"',}]+)""",
    re.I,
)
_MAX_DEPTH = 6
_MARK = "_alpaca_di_handler"


def mask_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: mask everything secret-shaped in an event.

    * a field whose name says secret, password, token, authorization, credential...
      becomes ``**********``; a key id field (``key_id``, ``api_key``...) is masked
      like :attr:`Credentials.fingerprint <alpaca_di.Credentials.fingerprint>`;
    * ``SecretStr`` values stay masked, :class:`~alpaca_di.Credentials` show their fingerprint;
    * in text (messages, rendered tracebacks, nested dicts and lists): URL passwords
      (:func:`~alpaca_di.credentials.mask_url`), ``secret=...``-style assignments,
      Alpaca key ids (``PK``/``AK``/``CK`` + 14 or more capitals and digits) and
      40-character runs of letters and digits (the shape of an Alpaca secret key).

    Example::

        structlog.configure(processors=[mask_secrets, structlog.processors.JSONRenderer()])
    """
    for name in list(event_dict):
        event_dict[name] = _mask_field(name, event_dict[name], 0)
    return event_dict


def _mask_field(name: Any, value: Any, depth: int) -> Any:
    if isinstance(name, str) and value is not None and not isinstance(value, bool):
        if _SECRET_NAMES.search(name):
            return _MASK
        if _KEY_NAMES.match(name) and isinstance(value, str):
            return mask_key(value)
    return _mask_value(value, depth)


def _mask_value(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, SecretStr):
        return _MASK
    if isinstance(value, Credentials):
        return repr(value)
    if depth >= _MAX_DEPTH:
        return value if isinstance(value, (int, float, bool)) or value is None else "<deep>"
    if isinstance(value, Mapping):
        return {k: _mask_field(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_value(item, depth + 1) for item in value]
    if isinstance(value, BaseException):
        return mask_text(f"{type(value).__name__}: {value}")
    return value


def mask_text(text: str) -> str:
    """``text`` with URL passwords, secret assignments, key ids and secret-shaped runs masked.

    Example::

        mask_text("auth failed for PKABCDEFGHIJ123456 secret=s3cr3t")
        # 'auth failed for PK************3456 secret=**********'
    """
    if "://" in text:
        text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    text = _SECRET_ASSIGNMENT.sub(
        lambda m: f"{m.group('name')}{m.group('quote')}{_MASK}", text
    )
    text = _KEY_ID.sub(lambda m: mask_key(m.group(0)), text)
    return _SECRET_SHAPE.sub(_MASK, text)


@dataclass(frozen=True)
class LoggingSetup:
    """What :func:`configure_logging` did.

    Attributes:
        json: JSON lines (``True``) or console output (``False``).
        structlog: structlog was configured (``False``: the application's own
            configuration was kept).
        handler: a handler was installed on the root logger (``False``: the root
            logger's existing handlers were kept and receive the records).
    """

    json: bool
    structlog: bool
    handler: bool


_ours: dict[str, Any] = {}  # the processors list we gave structlog, to recognise it


def configure_logging(
    json: bool | None = None,
    level: str | int = "info",
    *,
    stream: TextIO | None = None,
    force: bool = False,
) -> LoggingSetup:
    """Configure structlog and ``logging`` for JSON lines (production) or a console (development).

    Args:
        json: ``True`` for JSON lines, ``False`` for readable console output;
            ``None`` (default): JSON unless ``stream`` is a terminal.
        level: the least severe level written (``"debug"``, ``"info"``, ``"warning"``,
            ``"error"``, ``"critical"`` or a ``logging`` number).
        stream: where lines go (default ``sys.stderr``).
        force: replace an existing structlog configuration and the root logger's
            handlers (default: keep them, see the module docs).

    Returns a :class:`LoggingSetup` saying what was configured. Never called by
    alpaca-di itself.

    Example::

        setup = configure_logging(level="info")
        structlog.get_logger("app").info("started", api_key="PKABCDEFGHIJ123456")
        # {"api_key": "PK************3456", "event": "started", "level": "info", ...}
    """
    number = _level(level)
    if json is not None and not isinstance(json, bool):
        raise TypeError(f"json must be True, False or None, got {json!r}")
    out = sys.stderr if stream is None else stream
    if json is None:
        isatty = getattr(out, "isatty", None)
        json = not (callable(isatty) and isatty())
    root = logging.getLogger()
    foreign = [h for h in root.handlers if not getattr(h, _MARK, False)]
    install_handler = force or not foreign
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=_colors(out))
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become text before masking, in the console too: an exception's
        # message may quote a secret.
        structlog.processors.format_exc_info,
        mask_secrets,
    ]
    configured = (
        force or not structlog.is_configured() or _ours.get("processors") is _current_processors()
    )
    if configured:
        # Through the standard library, so both kinds of records reach the same handlers:
        # ours format them (wrap_for_formatter), anyone else's get rendered text.
        last: Any = structlog.stdlib.ProcessorFormatter.wrap_for_formatter
        if not install_handler:
            last = renderer
        processors = [structlog.stdlib.filter_by_level, *shared, last]
        structlog.configure(
            processors=processors,
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
        _ours["processors"] = processors
    for handler in [h for h in root.handlers if getattr(h, _MARK, False) or force]:
        root.removeHandler(handler)
    if install_handler:
        handler = logging.StreamHandler(out)
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
                foreign_pre_chain=shared,
            )
        )
        setattr(handler, _MARK, True)
        root.addHandler(handler)
        root.setLevel(number)
    return LoggingSetup(json=json, structlog=configured, handler=install_handler)


def _current_processors() -> Any:
    return structlog.get_config().get("processors")


def _level(level: str | int) -> int:
    if isinstance(level, bool):
        raise TypeError("level must be a level name or a logging level number")
    if isinstance(level, int):
        return level
    if isinstance(level, str):
        number = logging.getLevelName(level.strip().upper())
        if isinstance(number, int):
            return number
    raise ValueError(
        f"unknown log level {level!r}; use debug, info, warning, error, critical or a number"
    )


def _colors(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())
