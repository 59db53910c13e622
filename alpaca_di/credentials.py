"""Credentials: an Alpaca key pair, the key under which connections are shared.

A leaf: it imports nothing of alpaca-di's, so transport, settings and every layer
above can take it. Two containers holding equal credentials share one socket per
endpoint, and the secret appears in no repr, log line or pickle::

    from alpaca_di import Credentials

    creds = Credentials("PKTEST1234ABCD", "not-shown")
    print(creds)              # Credentials(PK******ABCD)
    creds.secret              # SecretStr('**********')

:func:`mask_url` is the one place a URL's password is hidden before it is logged,
shown in a repr or quoted in an error (settings and the Redis scale-out use it);
:func:`mask_key` the one place a key id is masked (``fingerprint``, settings, logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import SecretStr

__all__ = ["Credentials", "mask_key", "mask_url"]


@dataclass(frozen=True, eq=False)
class Credentials:
    """An Alpaca key pair. Frozen, hashable, and safe to print or log.

    Equality and hashing use the key id and the secret, so two distinct key
    pairs never share a connection, while the secret itself appears in no
    ``repr``, ``str`` or log line: ``fingerprint`` is the masked key id.

    Example::

        a = Credentials("PKAAAA1111", "s3cret")
        b = Credentials("PKAAAA1111", SecretStr("s3cret"))
        assert a == b and hash(a) == hash(b)
        assert "s3cret" not in repr(a)
    """

    key_id: str
    secret: SecretStr
    _hash: int = field(init=False, repr=False, compare=False)

    def __init__(self, key_id: str, secret: str | SecretStr) -> None:
        if not isinstance(key_id, str) or not key_id.strip():
            raise ValueError("Credentials: key_id (APCA_API_KEY_ID) must be a non-empty string")
        if isinstance(secret, str):
            secret = SecretStr(secret)
        if not isinstance(secret, SecretStr) or not secret.get_secret_value():
            raise ValueError("Credentials: secret (APCA_API_SECRET_KEY) must be a non-empty string")
        object.__setattr__(self, "key_id", key_id.strip())
        object.__setattr__(self, "secret", secret)
        object.__setattr__(self, "_hash", hash((self.key_id, secret.get_secret_value())))

    @property
    def fingerprint(self) -> str:
        """The key id with all but its first two and last four characters masked."""
        return mask_key(self.key_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return (
            self.key_id == other.key_id
            and self.secret.get_secret_value() == other.secret.get_secret_value()
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Credentials({self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Credentials cannot be pickled: that would write the secret out")


def mask_key(key_id: str) -> str:
    """A key id with all but its first two and last four characters masked (safe to log).

    Keys of six characters or fewer keep only their first one.

    Example::

        mask_key("PKTEST1234ABCD")   # 'PK********ABCD'
    """
    if len(key_id) <= 6:
        return key_id[:1] + "*" * (len(key_id) - 1)
    return key_id[:2] + "*" * (len(key_id) - 6) + key_id[-4:]


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to log, show or raise).

    A URL that cannot be parsed is not echoed at all: it may hold the password
    in a place the parser did not recognise.

    Example::

        mask_url("redis://:pw@cache:6379/0")   # 'redis://:***@cache:6379/0'
        mask_url("redis://cache:6379/0")       # unchanged: no password
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if not password:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
