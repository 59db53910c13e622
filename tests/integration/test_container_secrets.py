"""Secrets stay out of output: the suite-wide guard works, and our error paths are clean.

structlog's default ``ConsoleRenderer`` renders exceptions with ``rich``, which
prints the **local variables** of every frame of the traceback. An exception
whose traceback passes through a frame holding the secret in a local therefore
prints it. The probes below log the exceptions users are most likely to log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from dependency_injector import providers

from alpaca_di import (
    AlpacaAPIError,
    AlpacaContainer,
    AlpacaSettings,
    AuthenticationError,
    ConfigurationError,
    ConnectionRegistry,
)
from alpaca_di.testing import AlpacaEmulator, find_leaks, register_secret, registered_secrets

KEY = "PKCONTAINER00001"
SECRET = "container-secret-one-do-not-leak"
DEADLINE = 10.0
ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

log = structlog.get_logger("tests.secrets")


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emulator:
        yield emulator


# -- the guard ------------------------------------------------------------------------------------


def test_the_suite_guard_knows_this_modules_secret():
    assert SECRET in registered_secrets()


def test_find_leaks_masks_what_it_reports():
    register_secret("probe-secret-abc-123")

    found = find_leaks("header\nvalue=PROBE-SECRET-ABC-123 trailer")

    assert found == ["pr******************(20 chars)"]
    assert "probe-secret-abc-123" not in " ".join(found)
    assert find_leaks("nothing to see") == []
    with pytest.raises(ValueError, match="at least 6"):
        register_secret("short")


INNER_SECRET = "inner-run-only-secret-7f3a"


def test_the_root_conftest_fails_a_test_that_prints_a_secret(pytester: pytest.Pytester):
    # The inner run uses our real root conftest plus one secret this outer run does not
    # know: pytester echoes the inner output here, where the guard must not see a secret.
    pytester.makeconftest(
        ROOT_CONFTEST.read_text() + f"\nregister_secret({INNER_SECRET!r})\n"
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_leaky=f"""
        import logging
        import sys

        import structlog

        def test_print():
            print("oops {INNER_SECRET}")

        def test_structlog():
            structlog.get_logger().info("connecting", secret="{INNER_SECRET}")

        def test_stdlib_logging():
            logging.getLogger("x").warning("secret is %s", "{INNER_SECRET}".upper())

        def test_stderr_in_teardown(request):
            request.addfinalizer(lambda: sys.stderr.write("{INNER_SECRET}"))

        def test_clean():
            print("nothing secret here")
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 3
    assert outcomes.get("errors") == 1  # the teardown leak fails the teardown phase
    assert outcomes.get("passed") == 2  # test_clean, and test_stderr_in_teardown's call
    result.stdout.fnmatch_lines(
        ["*a test secret leaked into captured output: in**********************(26 chars)*"]
    )


# -- probes: logging the errors a user is likely to log -------------------------------------------


def test_a_configuration_error_from_the_container_logs_no_secret(capsys):
    container = AlpacaContainer()
    container.config.from_dict({"api_key": KEY, "secret_key": SECRET, "feed": "bogus"})

    with pytest.raises(ConfigurationError) as excinfo:
        container.stock_stream()
    log.error("startup failed", exc_info=excinfo.value)

    out, err = capsys.readouterr()
    assert "ALPACA_FEED" in out
    assert find_leaks(out + err, [SECRET]) == []


def test_a_failing_shutdown_logs_no_secret(emu, capsys, mocker):
    registry = ConnectionRegistry()
    container = AlpacaContainer()
    container.config.from_dict(
        {"api_key": KEY, "secret_key": SECRET, "data_stream_url": emu.ws_url}
    )
    container.registry.override(providers.Object(registry))
    acquire = mocker.spy(registry, "acquire")
    container.stock_stream().wait_ready(DEADLINE)
    [lease] = acquire.spy_return_list
    mocker.patch.object(lease, "release", side_effect=RuntimeError("release failed"))

    container.shutdown_resources()  # logs stream_resource.shutdown_failed with a traceback

    out, err = capsys.readouterr()
    assert "stream_resource.shutdown_failed" in out
    assert "locals" in out  # rich rendered the frames' variables...
    assert find_leaks(out + err, [SECRET]) == []  # ...and none of them is the secret
    registry.close_all()


def test_an_authentication_error_from_wait_ready_logs_no_secret(emu, capsys):
    registry = ConnectionRegistry()
    container = AlpacaContainer()
    container.config.from_dict(
        {"api_key": KEY, "secret_key": SECRET, "data_stream_url": emu.ws_url}
    )
    container.registry.override(providers.Object(registry))
    emu.reject_auth(402)
    try:
        with pytest.raises(AuthenticationError) as excinfo:
            container.stock_stream().wait_ready(DEADLINE)
        log.error("could not connect", exc_info=excinfo.value)
    finally:
        container.shutdown_resources()
        registry.close_all()

    out, err = capsys.readouterr()
    assert "AuthenticationError" in out
    assert find_leaks(out + err, [SECRET]) == []


def test_a_configuration_error_from_alpaca_settings_logs_no_secret(capsys):
    with pytest.raises(ConfigurationError) as excinfo:
        AlpacaSettings(api_key=KEY, secret_key=SECRET, feed="bogus")
    log.error("bad settings", exc_info=excinfo.value)

    out, err = capsys.readouterr()
    assert "ALPACA_FEED" in out
    assert find_leaks(out + err, [SECRET]) == []


def test_a_rest_error_from_the_manager_logs_no_secret(emu, capsys):
    # alpaca-py's own frames keep the secret in request headers; AlpacaManager raises
    # AlpacaAPIError from outside them, so its traceback never reaches those frames.
    container = AlpacaContainer()
    container.config.from_dict({"api_key": KEY, "secret_key": SECRET, "api_url": emu.api_url})
    container.registry.override(providers.Object(ConnectionRegistry()))
    emu.fail_rest(403, "forbidden")
    try:
        with pytest.raises(AlpacaAPIError, match="forbidden") as excinfo:
            container.alpaca_manager().account()
        log.error("account failed", exc_info=excinfo.value)
    finally:
        container.shutdown_resources()

    out, err = capsys.readouterr()
    assert "AlpacaAPIError" in out
    assert find_leaks(out + err, [SECRET]) == []
