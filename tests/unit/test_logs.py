"""configure_logging: JSON lines or console, secrets masked, existing setups respected."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from alpaca_di import Credentials, LoggingSetup, configure_logging
from alpaca_di.logs import mask_secrets, mask_text

KEY_ID = "PKLOGSTEST12345678"
SECRET = "Zq7LogsSecretValue0123456789abcdefghijKL"  # 40 letters and digits, like Alpaca's


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test starts from an unconfigured structlog and a root logger without handlers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    for handler in handlers:
        root.removeHandler(handler)
    structlog.reset_defaults()
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(**config)


def bare_root() -> None:
    """Remove pytest's log-capture handlers, added to the root logger around each test."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_from_structlog_and_logging_parse_with_the_same_fields() -> None:
    bare_root()
    out = io.StringIO()
    setup = configure_logging(json=True, stream=out)
    assert setup == LoggingSetup(json=True, structlog=True, handler=True)
    structlog.get_logger("alpaca_di.hub").info("hub.ready", kind="stock", symbols=3)
    logging.getLogger("uvicorn.error").warning("worker %s booted", 7)
    first, second = _lines(out)
    assert first["event"] == "hub.ready"
    assert (first["level"], first["logger"], first["kind"], first["symbols"]) == (
        "info",
        "alpaca_di.hub",
        "stock",
        3,
    )
    assert second["event"] == "worker 7 booted"
    assert (second["level"], second["logger"]) == ("warning", "uvicorn.error")
    for line in (first, second):
        assert line["timestamp"].endswith("Z")


def test_not_a_terminal_means_json_and_a_terminal_means_console() -> None:
    bare_root()
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert configure_logging(stream=io.StringIO()).json is True
    terminal = Terminal()
    assert configure_logging(stream=terminal).json is False
    structlog.get_logger("app").info("started", port=8000)
    text = terminal.getvalue()
    assert "started" in text
    assert "port" in text
    assert "8000" in text
    assert not text.lstrip().startswith("{")


def test_console_output_is_readable_lines() -> None:
    bare_root()
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    structlog.get_logger("app").warning("order.rejected", symbol="AAPL")
    [line] = out.getvalue().splitlines()
    assert "order.rejected" in line
    assert "symbol=AAPL" in line
    assert "warning" in line


def test_secrets_are_masked_in_fields_messages_arguments_and_tracebacks() -> None:
    bare_root()
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    log = structlog.get_logger("app")
    log.info(
        "auth",
        api_key=KEY_ID,
        secret_key=SECRET,
        password="hunter22",
        settings={"nested": {"secret": "deep-secret-value"}},
        secret_str=SecretStr("secret-str-value"),
        account=Credentials(KEY_ID, SECRET),
        redis_url="redis://:redis-pass-123@cache:6379/0",
    )
    logging.getLogger("alpaca").error("auth failed for %s with %s", KEY_ID, SECRET)
    try:
        raise RuntimeError(f"server said: secret={SECRET}")
    except RuntimeError:
        log.exception("request.failed")
        logging.getLogger("lib").exception("lib failed")
    text = out.getvalue()
    for leaked in (KEY_ID, SECRET, "hunter22", "deep-secret-value", "secret-str-value",
                   "redis-pass-123"):
        assert leaked not in text, leaked
    lines = _lines(out)
    assert lines[0]["api_key"] == "PK************5678"
    assert lines[0]["secret_key"] == "**********"
    assert lines[0]["redis_url"] == "redis://:***@cache:6379/0"
    assert lines[0]["account"] == "Credentials(PK************5678)"
    assert lines[1]["event"] == "auth failed for PK************5678 with **********"
    assert "RuntimeError" in lines[2]["exception"]
    assert "RuntimeError" in lines[3]["exception"]


def test_the_processor_and_the_text_masker_can_be_used_alone() -> None:
    bare_root()
    event = mask_secrets(None, "info", {"event": f"key {KEY_ID}", "token": "t0k3n"})
    assert event == {"event": "key PK************5678", "token": "**********"}
    assert mask_text("fine: AAPL 190.5 order 3f2a-11") == "fine: AAPL 190.5 order 3f2a-11"


def test_calling_it_again_replaces_its_own_handler_and_config() -> None:
    bare_root()
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    setup = configure_logging(json=True, stream=second, level="warning")
    assert setup.structlog is True
    assert setup.handler is True
    assert len(logging.getLogger().handlers) == 1
    structlog.get_logger("app").warning("once")
    structlog.get_logger("app").info("filtered by the new level")
    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once"]


def test_existing_root_handlers_are_kept_and_get_rendered_structlog_events() -> None:
    bare_root()
    theirs = io.StringIO()
    handler = logging.StreamHandler(theirs)
    handler.setFormatter(logging.Formatter("APP %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    setup = configure_logging(json=True, stream=io.StringIO(), level="debug")
    assert setup == LoggingSetup(json=True, structlog=True, handler=False)
    assert root.handlers == [handler]
    assert root.level == logging.INFO  # their level, not ours
    structlog.get_logger("alpaca_di.hub").info("hub.ready", secret_key=SECRET)
    [line] = theirs.getvalue().splitlines()
    assert line.startswith("APP INFO {")
    assert json.loads(line.removeprefix("APP INFO "))["secret_key"] == "**********"
    assert SECRET not in theirs.getvalue()


def test_an_application_structlog_config_is_kept_unless_forced() -> None:
    bare_root()
    captured: list[dict[str, Any]] = []

    def capture(_logger: Any, _method: str, event_dict: dict[str, Any]) -> Any:
        captured.append(dict(event_dict))
        raise structlog.DropEvent

    structlog.configure(processors=[capture])
    setup = configure_logging(json=True, stream=io.StringIO())
    assert setup.structlog is False
    structlog.get_logger().info("theirs")
    assert [event["event"] for event in captured] == ["theirs"]

    out = io.StringIO()
    logging.getLogger().addHandler(logging.NullHandler())
    forced = configure_logging(json=True, stream=out, force=True)
    assert forced == LoggingSetup(json=True, structlog=True, handler=True)
    assert len(logging.getLogger().handlers) == 1
    structlog.get_logger().info("ours")
    assert [line["event"] for line in _lines(out)] == ["ours"]
    assert [event["event"] for event in captured] == ["theirs"]


@pytest.mark.parametrize(("level", "error"), [("loud", ValueError), (True, TypeError)])
def test_a_bad_level_is_named(level: Any, error: type[Exception]) -> None:
    bare_root()
    with pytest.raises(error, match="level"):
        configure_logging(level=level, stream=io.StringIO())


def test_a_bad_json_flag_is_named() -> None:
    bare_root()
    with pytest.raises(TypeError, match="json"):
        configure_logging(json="yes", stream=io.StringIO())  # type: ignore[arg-type]


def test_importing_the_package_configures_nothing() -> None:
    bare_root()
    import importlib

    import alpaca_di.logs

    importlib.reload(alpaca_di.logs)
    assert not structlog.is_configured()
    assert logging.getLogger().handlers == []
