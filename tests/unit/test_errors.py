"""The error hierarchy and the mapping of Alpaca's stream codes."""

import pytest

from alpaca_di.errors import (
    AlpacaDIError,
    AuthenticationError,
    ConnectionLimitError,
    InsufficientSubscriptionError,
    ServerError,
    SlowClientError,
    SymbolLimitError,
    error_for_code,
)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (402, AuthenticationError),
        (405, SymbolLimitError),
        (406, ConnectionLimitError),
        (407, SlowClientError),
        (409, InsufficientSubscriptionError),
        (500, ServerError),
    ],
)
def test_codes_map_to_named_errors(code, cls):
    error = error_for_code(code, "server text")
    assert type(error) is cls
    assert isinstance(error, AlpacaDIError)
    assert error.code == code
    assert "server text" in str(error)


@pytest.mark.parametrize(
    ("feed", "suggestion"),
    [
        ("sip", "ALPACA_FEED=iex"),
        ("delayed_sip", "ALPACA_FEED=iex"),
        ("opra", "ALPACA_OPTION_FEED=indicative"),
    ],
)
def test_insufficient_subscription_names_the_feed_and_the_setting_to_change(feed, suggestion):
    error = error_for_code(409, "insufficient subscription", feed=feed)
    assert repr(feed) in str(error)
    assert suggestion in str(error)


def test_symbol_limit_lists_the_rolled_back_symbols():
    error = SymbolLimitError(405, "symbol limit exceeded", symbols=[("quotes", "TSLA")])
    assert error.symbols == (("quotes", "TSLA"),)
    assert "quotes:TSLA" in str(error)
