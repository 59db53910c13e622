"""Suite-wide guard: no test may print a test secret.

Every test's captured stdout, stderr and log records (structlog prints to stdout
by default; stdlib logging goes to the ``caplog`` capture), for the setup, call
and teardown phases alike, are scanned for the secrets the suite uses. A hit
turns the phase's report into a failure naming the masked secret and where it
showed up. Runs with ``-s`` capture nothing and so check nothing.

Tests that introduce a new secret add it to ``SUITE_SECRETS`` or call
:func:`alpaca_di.testing.register_secret`. ``tests/integration/test_container_secrets.py``
proves with ``pytester`` that this guard fails a leaking test.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from alpaca_di.testing import find_leaks, register_secret

pytest_plugins = ["pytester"]

SUITE_SECRETS: tuple[str, ...] = (
    "integration-secret-do-not-leak",  # tests/integration/*
    "never-print-this-secret-42",  # tests/unit/test_resources.py
    "sUp3r-s3cret-VALUE-9f8e7d",  # tests/unit/test_settings.py
    "secret-1",  # tests/unit/test_emulator.py
    "rest-secret",  # tests/unit/test_emulator_rest.py
    "conf-secret",  # tests/conformance/test_alpaca_py_streams.py
    "trade-secret",  # tests/conformance/test_alpaca_py_trading.py
    "container-secret-one-do-not-leak",  # tests/integration/test_container*.py
    "container-secret-two-do-not-leak",  # tests/integration/test_container*.py
)
register_secret(*SUITE_SECRETS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fail the phase whose captured output contains a registered secret."""
    report = yield
    # report.sections accumulates the earlier phases too: scan this phase's only.
    sections = [
        (name, content)
        for name, content in report.sections
        if name.startswith(("Captured stdout", "Captured stderr", "Captured log"))
        and name.endswith(f" {report.when}")
    ]
    leaks = {name: found for name, content in sections if (found := find_leaks(content))}
    if leaks:
        where = "; ".join(f"{', '.join(found)} in '{name}'" for name, found in leaks.items())
        report.outcome = "failed"
        report.longrepr = f"a test secret leaked into captured output: {where}"
    return report
