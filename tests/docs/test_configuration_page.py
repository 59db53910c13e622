"""docs/configuration.md documents every field of AlpacaSettings, as the code defines it.

The configuration reference is a hand-written table; these tests keep it honest:
a field added, renamed or given a new default in ``alpaca_di/settings.py`` fails
here until its row in the table says the same.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import PydanticUndefined

from alpaca_di.settings import AlpacaSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
FIELDS = dict(AlpacaSettings.model_fields)
# The key pair reads alpaca-py's variable names; every other field is ALPACA_<FIELD>.
ENV_ALIASES = {
    "api_key": ("APCA_API_KEY_ID", "ALPACA_API_KEY"),
    "secret_key": ("APCA_API_SECRET_KEY", "ALPACA_SECRET_KEY"),
}
_ROW = re.compile(r"^\|\s*`(?P<name>[a-z_]+)`\s*\|(?P<rest>.*)\|\s*$")


def _rows() -> dict[str, list[str]]:
    """Field name -> the other cells of its row in the settings table."""
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            rows[match["name"]] = [cell.strip() for cell in match["rest"].split("|")]
    return rows


def _shown(default: Any) -> str:
    """How the table writes a default value."""
    if default is PydanticUndefined:
        return "required"
    if isinstance(default, str):
        return f'`"{default}"`'
    return f"`{default!r}`"


def test_every_setting_has_a_row() -> None:
    missing = sorted(set(FIELDS) - set(_rows()))
    assert not missing, f"docs/configuration.md has no row for AlpacaSettings fields {missing}"


def test_every_row_is_a_setting() -> None:
    unknown = sorted(set(_rows()) - set(FIELDS))
    assert not unknown, f"docs/configuration.md documents fields AlpacaSettings lacks: {unknown}"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_row_names_the_environment_variable(name: str) -> None:
    row = _rows().get(name)
    assert row is not None, f"no row for {name}"
    variables = ENV_ALIASES.get(name, (f"ALPACA_{name.upper()}",))
    for variable in variables:
        assert f"`{variable}`" in row[0], f"the row of {name} does not name {variable}"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_row_shows_the_default(name: str) -> None:
    row = _rows().get(name)
    assert row is not None, f"no row for {name}"
    expected = _shown(FIELDS[name].default)
    assert row[1] == expected, f"the default of {name} is {expected}, the docs say {row[1]}"


def test_rows_have_a_meaning() -> None:
    empty = sorted(name for name, row in _rows().items() if len(row) < 3 or not row[2])
    assert not empty, f"rows without a meaning: {empty}"


def test_crypto_feed_row_lists_every_location_the_settings_accept() -> None:
    from typing import get_args

    from alpaca_di.settings import CryptoFeed

    cells = " ".join(_rows()["crypto_feed"])
    for location in get_args(CryptoFeed):
        assert f"`{location}`" in cells, f"the crypto_feed row does not list {location!r}"
    assert "supports `us` only" not in cells
