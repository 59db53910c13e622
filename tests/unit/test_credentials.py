"""Credentials' masking helper: one place hides a URL's password."""

from __future__ import annotations

from alpaca_di.credentials import mask_url


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_url("rediss://user:pw@h:1/0") == "rediss://user:***@h:1/0"
    assert mask_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_mask_url_never_echoes_a_url_it_cannot_parse() -> None:
    assert mask_url("redis://:pw@[::1") == "<unparsable URL>"
