"""``alpaca-di health``: its bad-settings message, run in-process (no logging configured)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alpaca_di.cli import commands as cli
from alpaca_di.cli.health import settings_problem
from alpaca_di.errors import ConfigurationError

KEY = "PKHEALTHUNIT0001"
SECRET = "health-unit-secret-never-printed"


def run(*argv: str) -> int:
    args = cli.build_parser().parse_args(["health", *argv])
    code: int = args._run(args)
    return code


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Alpaca variable and no ``.env`` file of the developer's."""
    for name in list(os.environ):
        if name.upper().startswith(("APCA_", "ALPACA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_bad_feed_names_alpaca_feed_not_the_credentials_nor_the_secret(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("APCA_API_KEY_ID", KEY)
    clean_env.setenv("APCA_API_SECRET_KEY", SECRET)
    clean_env.setenv("ALPACA_FEED", "sipp")

    assert run() == 2
    out, err = capsys.readouterr()
    assert out == ""
    first = err.splitlines()[0]
    assert "ALPACA_FEED" in first
    assert "APCA_API_KEY_ID" not in err
    assert "sipp" in err
    assert SECRET not in out + err


def test_missing_credentials_name_both_variables(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run() == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert "APCA_API_KEY_ID" in first
    assert "APCA_API_SECRET_KEY" in first


def test_settings_problem_without_known_fields_points_at_the_details() -> None:
    assert "see below" in settings_problem(ConfigurationError("paper key with live=..."))
    named = settings_problem(ConfigurationError("x", fields=["feed"], env_vars=["ALPACA_FEED"]))
    assert "ALPACA_FEED" in named
