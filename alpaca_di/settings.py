"""Settings: every knob of alpaca-di, read from the environment or a container's config.

``AlpacaSettings`` reads the key pair and every tuning knob from the environment (or an
``.env`` file) and turns them into what the rest of the library takes::

    from alpaca_di.settings import AlpacaSettings

    settings = AlpacaSettings()           # APCA_API_KEY_ID, APCA_API_SECRET_KEY, ALPACA_*
    settings.credentials()                # Credentials(PK******ABCD)
    settings.to_options()                 # ConnectionOptions(...)
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Literal, NoReturn, SupportsIndex, get_args
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from alpaca_di._check import host_port, is_loopback, is_seconds, is_word, one_edit_apart
from alpaca_di.credentials import Credentials, mask_key, mask_url
from alpaca_di.errors import ConfigurationError
from alpaca_di.protocol import StreamKind, data_path
from alpaca_di.transport.options import ConnectionOptions, OverflowPolicy

__all__ = [
    "AlpacaSettings",
    "RedisRole",
    "RedisTlsVerify",
    "UnknownSettingWarning",
    "endpoint_for",
    "env_var_of",
    "settings_from_mapping",
    "stream_feed",
]


class UnknownSettingWarning(UserWarning):
    """An ``ALPACA_*`` environment variable one edit away from a setting's name."""


StockFeed = Literal["iex", "sip", "delayed_sip", "test", "boats", "overnight"]
CryptoFeed = Literal["us", "us-1", "eu-1"]
OptionFeed = Literal["indicative", "opra"]
Sharing = Literal["local", "redis"]
RedisRole = Literal["candidate", "follower"]
RedisTlsVerify = Literal["required", "optional", "none"]

_PAPER_TRADING_STREAM = "wss://paper-api.alpaca.markets/stream"
_LIVE_TRADING_STREAM = "wss://api.alpaca.markets/stream"
_PAPER_API = "https://paper-api.alpaca.markets"
_LIVE_API = "https://api.alpaca.markets"

# Key id and secret: the names alpaca-py documents first, then the ALPACA_ spellings.
_KEY_ENV = ("APCA_API_KEY_ID", "ALPACA_API_KEY")
_SECRET_ENV = ("APCA_API_SECRET_KEY", "ALPACA_SECRET_KEY")
_ENV_PREFIX = "ALPACA_"
# What pydantic prints in place of a SecretStr: a "secret" equal to it was copied from a dump.
_MASK = "**********"
_NONE_WORDS = frozenset({"none", "null", "off", "disabled"})
# Alpaca's key ids are 20 upper-case characters starting PK (paper) or AK (live); secrets
# are 40 mixed-case ones. Either shape in the other field means the two were swapped.
_KEY_ID_SHAPE = re.compile(r"[PA]K[A-Z0-9]{14,}")
_SECRET_MIN_LENGTH = 30


def _looks_like_secret(key: str) -> bool:
    return len(key) >= _SECRET_MIN_LENGTH and any(char.islower() for char in key)


# Set by settings_from_mapping: read only the arguments, name config keys in errors.
_MAPPING_ONLY: ContextVar[bool] = ContextVar("alpaca_di_settings_mapping_only", default=False)


class AlpacaSettings(BaseSettings):
    """Everything alpaca-di needs to reach Alpaca, read from the environment.

    Sources, highest priority first: keyword arguments, environment variables, an
    ``.env`` file in the working directory, the defaults below. The key pair comes from
    ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (alpaca-py's names; ``ALPACA_API_KEY``
    / ``ALPACA_SECRET_KEY`` also work); every other field from ``ALPACA_<FIELD>``, for
    example ``ALPACA_FEED=sip`` or ``ALPACA_PING_INTERVAL=none``. Names are
    case-insensitive and an empty variable counts as unset.

    A missing or invalid value raises one :class:`~alpaca_di.errors.ConfigurationError`
    that lists every bad field with the variable to set; it never contains the secret,
    and neither does ``repr()`` (the key id is shown masked, like
    :attr:`Credentials.fingerprint`).

    Example::

        settings = AlpacaSettings()                        # env + .env
        settings = AlpacaSettings(api_key="PK...", secret_key="...", feed="sip")
        creds = settings.credentials()                     # Credentials(PK******ABCD)
        options = settings.to_options()                    # ConnectionOptions(feed="sip", ...)

        app.config.alpaca.from_pydantic(settings)          # dependency-injector
    """

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    api_key: str = Field(
        validation_alias=AliasChoices(*_KEY_ENV, "api_key"),
        description="Alpaca API key id (APCA_API_KEY_ID).",
    )
    secret_key: SecretStr = Field(
        validation_alias=AliasChoices(*_SECRET_ENV, "secret_key"),
        description="Alpaca API secret key (APCA_API_SECRET_KEY). Never printed.",
    )
    paper: bool = Field(True, description="Paper trading (True) or live (False).")
    feed: StockFeed = Field("iex", description="Stock data feed.")
    crypto_feed: CryptoFeed = Field("us", description="Crypto data location.")
    option_feed: OptionFeed = Field("indicative", description="Option data feed.")
    allow_insecure: bool = Field(
        False,
        description="Allow plain ws:// and http:// to hosts that are not loopback.",
    )
    data_stream_url: str = Field(
        "wss://stream.data.alpaca.markets",
        description="Base URL of the market data streams; the path of each feed is appended.",
    )
    trading_stream_url: str | None = Field(
        None,
        description="Full URL of the trading stream; None: paper or live default.",
    )
    api_url: str | None = Field(None, description="REST base URL; None: paper or live default.")
    backoff_initial: PositiveFloat = Field(0.5, description="First reconnect delay (s).")
    backoff_max: PositiveFloat = Field(30.0, description="Longest reconnect delay (s).")
    connection_limit_grace: NonNegativeFloat = Field(
        90.0,
        description="How long 406 connection limit exceeded is retried (s), local sharing; "
        "a sharing=redis leader retries for as long as the stream is wanted.",
    )
    ping_interval: PositiveFloat | None = Field(
        10.0, description="Keepalive ping period (s); None disables pings."
    )
    ping_timeout: PositiveFloat | None = Field(20.0, description="Pong deadline (s).")
    data_timeout: PositiveFloat | None = Field(
        None, description="Recycle a subscribed socket mute for this long (s); None: off."
    )
    open_timeout: PositiveFloat = Field(10.0, description="Handshake + auth deadline (s).")
    close_timeout: PositiveFloat = Field(1.0, description="Close handshake deadline (s).")
    queue_maxsize: PositiveInt | None = Field(
        10_000, description="Default per-subscription queue bound; None: unbounded."
    )
    overflow: OverflowPolicy = Field("drop_oldest", description="Full-queue policy.")
    sharing: Sharing = Field("local", description="Connection sharing: local or redis.")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL used when sharing='redis'."
    )
    redis_username: str | None = Field(None, description="Redis ACL user; None: the URL's.")
    redis_password: SecretStr | None = Field(
        None, description="Password of the Redis user; None: the URL's. Never printed."
    )
    redis_tls_ca_file: str | None = Field(None, description="PEM CA bundle of the Redis server.")
    redis_tls_cert_file: str | None = Field(None, description="Redis client certificate (PEM).")
    redis_tls_key_file: str | None = Field(None, description="Key of redis_tls_cert_file.")
    redis_tls_verify: RedisTlsVerify = Field(
        "required", description="Check of the Redis server's certificate."
    )
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Sentinels as host:port, comma-separated; empty: no Sentinel."
    )
    redis_sentinel_master: str = Field("mymaster", description="The primary's Sentinel name.")
    redis_sentinel_username: str | None = Field(None, description="ACL user of the Sentinels.")
    redis_sentinel_password: SecretStr | None = Field(
        None, description="Password of the Sentinels. Never printed."
    )
    redis_prefix: str = Field("alpaca-di", description="First part of every Redis key.")
    redis_role: RedisRole = Field(
        "candidate", description="candidate: this process may lead; follower: never."
    )
    redis_fallback_local: bool = Field(
        False, description="Share locally when Redis is down at start, instead of failing."
    )
    redis_lock_ttl: float = Field(3.0, description="Leader lock lifetime (s).")
    redis_consumer_id: str | None = Field(
        None, description="Stable trade-update reader id, to resume after a restart."
    )

    strict_env: bool = Field(
        False,
        description="Refuse, instead of warn about, an ALPACA_* variable one edit away "
        "from a setting.",
    )

    def __init__(self, **values: Any) -> None:
        """Read the settings; see the class docstring. Raises ConfigurationError."""
        from_mapping = _MAPPING_ONLY.get()
        problems = _unknown_keys(values, config=from_mapping)
        fields: list[str] = []
        if not problems:
            try:
                super().__init__(**values)
            except ValidationError as exc:
                secrets = _secret_candidates(values, from_env=not from_mapping)
                problems = _problems(exc, secrets, config=from_mapping)
                fields = _fields_of(exc)
            except SettingsError as exc:
                problems = [f"could not read the settings sources: {_first_line(exc)}"]
            else:
                if not from_mapping:
                    _check_environment(os.environ, strict=self.strict_env)
                return
        # Raised outside the except block: the ValidationError (which quotes the input,
        # secret included) must not ride along as __context__. The locals holding the
        # secret are dropped first: traceback printers that show local variables
        # (structlog's ConsoleRenderer with rich) would print them.
        message = _format(problems)
        values.clear()
        secrets = []
        raise ConfigurationError(message, fields=fields, env_vars=map(env_var_of, fields))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, environment, ``.env``; arguments only for settings_from_mapping."""
        if _MAPPING_ONLY.get():
            return (init_settings,)
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)

    @classmethod
    def load(cls, **overrides: Any) -> AlpacaSettings:
        """Read the settings with ``overrides`` on top; same as ``AlpacaSettings(**overrides)``.

        Example::

            settings = AlpacaSettings.load(feed="sip", paper=False)
        """
        return cls(**overrides)

    # -- derived values ------------------------------------------------------------------

    @property
    def resolved_trading_stream_url(self) -> str:
        """``trading_stream_url``, or the paper/live default when it is ``None``."""
        if self.trading_stream_url is not None:
            return self.trading_stream_url
        return _PAPER_TRADING_STREAM if self.paper else _LIVE_TRADING_STREAM

    @property
    def resolved_api_url(self) -> str:
        """``api_url``, or the paper/live REST default when it is ``None``."""
        if self.api_url is not None:
            return self.api_url
        return _PAPER_API if self.paper else _LIVE_API

    def credentials(self) -> Credentials:
        """The key pair as :class:`Credentials` (the sharing key of connections)."""
        return Credentials(self.api_key, self.secret_key)

    def to_options(self) -> ConnectionOptions:
        """The connection tuning knobs as a :class:`ConnectionOptions`."""
        return ConnectionOptions(
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            connection_limit_grace=self.connection_limit_grace,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            data_timeout=self.data_timeout,
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            allow_insecure=self.allow_insecure,
            feed=self.feed,
            queue_maxsize=self.queue_maxsize,
            overflow=self.overflow,
        )

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "api_key" and isinstance(value, str):
                value = mask_key(value)
            elif name in _URL_FIELDS and isinstance(value, str):
                value = mask_url(value)
            yield name, value

    # -- validation ----------------------------------------------------------------------

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("AlpacaSettings cannot be pickled: that would write the secret out")

    @field_validator("api_key", mode="after")
    @classmethod
    def _check_key(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if _looks_like_secret(value):
            raise ValueError(
                "looks like a secret key (long, with lowercase letters), not a key id "
                "(PK.../AK..., upper case): are APCA_API_KEY_ID and APCA_API_SECRET_KEY swapped?"
            )
        return value

    @field_validator("secret_key", mode="after")
    @classmethod
    def _check_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if not secret.strip():
            raise ValueError("must not be empty")
        if secret == _MASK:
            raise ValueError(
                "is the masked placeholder '**********', not a secret; it was probably "
                "copied from a JSON dump: pass the real value"
            )
        if _KEY_ID_SHAPE.fullmatch(secret.strip()):
            raise ValueError(
                "looks like a key id (PK.../AK..., upper case), not a secret: are "
                "APCA_API_KEY_ID and APCA_API_SECRET_KEY swapped?"
            )
        return value

    @field_validator(
        "feed",
        "crypto_feed",
        "option_feed",
        "overflow",
        "sharing",
        "redis_tls_verify",
        "redis_role",
        mode="before",
    )
    @classmethod
    def _normalise_word(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "ping_interval",
        "ping_timeout",
        "data_timeout",
        "queue_maxsize",
        "trading_stream_url",
        "api_url",
        "redis_username",
        "redis_tls_ca_file",
        "redis_tls_cert_file",
        "redis_tls_key_file",
        "redis_sentinel_username",
        "redis_consumer_id",
        mode="before",
    )
    @classmethod
    def _none_words(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
            return None
        return value

    @field_validator("data_stream_url", "trading_stream_url", mode="after")
    @classmethod
    def _check_ws_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return _check_url(value, ("wss", "ws"), allow_insecure=_allow_insecure(info))

    @field_validator("api_url", mode="after")
    @classmethod
    def _check_api_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return _check_url(value, ("https", "http"), allow_insecure=_allow_insecure(info))

    @field_validator("redis_url", mode="after")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not supported; "
                "use redis://, rediss:// or unix://"
            )
        return value.strip()

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            return value
        found = tuple(str(item).strip() for item in items if str(item).strip())
        return tuple(item for item in found if host_port(item))

    @field_validator("redis_prefix", "redis_consumer_id", "redis_sentinel_master", "redis_lock_ttl")
    @classmethod
    def _check_sharing(cls, value: object, info: ValidationInfo) -> object:
        if info.field_name == "redis_lock_ttl" and not is_seconds(value):
            raise ValueError("must be a positive, finite number of seconds")
        if isinstance(value, str) and not is_word(value):
            raise ValueError("must be a non-empty word without spaces")
        return value

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _check_file(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = os.path.expanduser(value.strip())
        if not os.path.isfile(value):
            raise ValueError("is not a readable file")
        return value

    @model_validator(mode="after")
    def _check_redis(self) -> AlpacaSettings:
        url = urlsplit(self.redis_url)
        tls_files = [
            name
            for name in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
            if getattr(self, name) is not None
        ]
        if tls_files and url.scheme != "rediss":
            raise ValueError(
                f"{', '.join(_env_label(name) for name in tls_files)} only apply to TLS: set "
                f"{_env_label('redis_url')} to rediss://..."
            )
        if self.redis_tls_key_file is not None and self.redis_tls_cert_file is None:
            raise ValueError(f"{_env_label('redis_tls_key_file')} is set without the cert file")
        if self.redis_password is not None and url.password:
            raise ValueError(
                f"the Redis password is set twice, in {_env_label('redis_url')} and "
                f"{_env_label('redis_password')}: keep one"
            )
        if self.redis_sentinels and url.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"{_env_label('redis_sentinels')} needs {_env_label('redis_url')} to be "
                "redis:// or rediss:// (its database, user and TLS apply to the primary)"
            )
        if url.scheme == "rediss" and self.redis_tls_verify == "none" and not self.allow_insecure:
            hosts = [host for host, _ in self.redis_sentinel_addresses] or [url.hostname or ""]
            remote = [host for host in hosts if not is_loopback(host)]
            if remote:
                raise ValueError(
                    f"{_env_label('redis_tls_verify')}=none accepts any certificate from "
                    f"{remote[0]!r}, so a man in the middle would get the Redis password: "
                    f"give {_env_label('redis_tls_ca_file')}, or set "
                    f"{_env_label('allow_insecure')}=true"
                )
        return self

    @property
    def redis_sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        """``redis_sentinels`` as ``(host, port)`` pairs."""
        return tuple(host_port(item) for item in self.redis_sentinels)

    @model_validator(mode="after")
    def _check_paper_matches_key(self) -> AlpacaSettings:
        # Alpaca's paper key ids start with PK, live ones with AK; the wrong pair is
        # refused by Alpaca as a bare 402. Only Alpaca's own endpoints are checked.
        if self.trading_stream_url is not None or self.api_url is not None:
            return self
        prefix = self.api_key[:2].upper()
        if prefix == "AK" and self.paper:
            raise ValueError(
                "api_key looks like a live key (AK...) but paper=True would use the paper "
                f"endpoints: set {_env_label('paper')}=false, or use your paper key (PK...)"
            )
        if prefix == "PK" and not self.paper:
            raise ValueError(
                "api_key looks like a paper key (PK...) but paper=False would use the live "
                f"endpoints: set {_env_label('paper')}=true, or use your live key (AK...)"
            )
        return self

    @model_validator(mode="after")
    def _check_backoff(self) -> AlpacaSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max}) must be >= backoff_initial "
                f"({self.backoff_initial}): set {_env_label('backoff_max')} and "
                f"{_env_label('backoff_initial')}"
            )
        return self


def stream_feed(settings: AlpacaSettings, kind: StreamKind | str) -> str | None:
    """The feed ``settings`` configure for the ``kind`` stream (``None`` for news and trading).

    Example::

        stream_feed(AlpacaSettings(api_key="PK", secret_key="s", feed="sip"), "stock")  # 'sip'
    """
    setting = _FEED_SETTING.get(StreamKind(kind))
    return getattr(settings, setting[0]) if setting else None


def endpoint_for(settings: AlpacaSettings, kind: StreamKind | str) -> str:
    """The full WebSocket URL of ``kind`` under ``settings``.

    Data streams are ``data_stream_url`` plus the path of the configured feed;
    the trading stream is ``resolved_trading_stream_url``. An unknown feed raises
    :class:`~alpaca_di.errors.ConfigurationError` naming its environment variable.

    Example::

        endpoint_for(AlpacaSettings(api_key="PK", secret_key="s", feed="sip"), "stock")
        # 'wss://stream.data.alpaca.markets/v2/sip'
    """
    kind = StreamKind(kind)
    if kind is StreamKind.TRADING:
        return settings.resolved_trading_stream_url
    setting = _FEED_SETTING.get(kind)
    feed = stream_feed(settings, kind)
    try:
        path = data_path(kind, feed)
    except ValueError as exc:
        assert setting is not None  # news takes no feed and cannot fail
        raise ConfigurationError(
            f"invalid Alpaca settings: {setting[0]}={feed!r} is not supported for the "
            f"{kind.value} stream ({exc}); set {setting[1]}",
            fields=(setting[0],),
            env_vars=(setting[1],),
        ) from None
    return settings.data_stream_url + path


def settings_from_mapping(mapping: Mapping[str, Any] | None) -> AlpacaSettings:
    """Build :class:`AlpacaSettings` from a dependency-injector ``Configuration`` dict.

    Keys are field names (``api_key``, ``secret_key``, ``feed``...); an unknown key is
    an error naming it and the nearest valid name. Only the mapping is read (no
    environment, no ``.env``): the configuration is the single source of truth. A
    ``None`` value counts as unset for fields that cannot be ``None``
    (``Configuration`` yields ``None`` for options never loaded), and is kept for
    those that can (``ping_interval=None`` disables pings).

    Errors raise one :class:`~alpaca_di.errors.ConfigurationError` naming each config key
    and its environment variable, never the secret.

    Example::

        config = providers.Configuration()
        config.from_pydantic(AlpacaSettings())
        settings = settings_from_mapping(config())
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigurationError(
            f"Alpaca configuration must be a mapping of setting names, got {type(mapping).__name__}"
        )
    try:
        return _settings_from(mapping)
    except ConfigurationError as exc:
        message, fields, env_vars = str(exc), exc.fields, exc.env_vars
    # A fresh error whose traceback starts here, with the mapping (it holds the
    # secret) dropped: tracebacks rendered with local variables show nothing secret.
    mapping = None
    raise ConfigurationError(message, fields=fields, env_vars=env_vars) from None


def _settings_from(mapping: Mapping[str, Any]) -> AlpacaSettings:
    data: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or key.startswith("_"):  # not BaseSettings' _env_file...
            continue
        field_name = _LOC_TO_FIELD.get(key, key)
        if value is None and field_name in _FIELDS and not _NULLABLE[field_name]:
            continue
        data[key] = value
    token = _MAPPING_ONLY.set(True)
    try:
        return AlpacaSettings(**data)
    finally:
        _MAPPING_ONLY.reset(token)


# -- helpers -------------------------------------------------------------------------------

_FIELDS: dict[str, FieldInfo] = dict(AlpacaSettings.model_fields)
_NULLABLE: dict[str, bool] = {
    name: type(None) in get_args(info.annotation) for name, info in _FIELDS.items()
}
_ALIASES: dict[str, tuple[str, ...]] = {"api_key": _KEY_ENV, "secret_key": _SECRET_ENV}
_LOC_TO_FIELD: dict[str, str] = {
    **{name: name for name in _FIELDS},
    **{alias: name for name, aliases in _ALIASES.items() for alias in aliases},
}
# Fields whose input value may be quoted in an error message (URLs password-masked).
_SECRET_FIELDS = frozenset({"secret_key", "redis_password", "redis_sentinel_password"})
_QUOTABLE = frozenset(_FIELDS) - {"api_key"} - _SECRET_FIELDS
_URL_FIELDS = frozenset({"data_stream_url", "trading_stream_url", "api_url", "redis_url"})


def _unknown_keys(values: Mapping[str, Any], *, config: bool) -> list[str]:
    """One problem per key that names no setting, with the nearest valid name."""
    problems = []
    for key in values:
        if not isinstance(key, str) or key.startswith("_") or key in _LOC_TO_FIELD:
            continue  # _env_file and the like are BaseSettings' own arguments
        where = "config key" if config else "argument"
        near = difflib.get_close_matches(key, list(_FIELDS), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}?" if near else "see the configuration reference"
        problems.append(f"{where} {key!r} is not a setting: {hint}")
    return problems


def _check_environment(environ: Mapping[str, str], *, strict: bool) -> None:
    """Report ``ALPACA_*``/``APCA_*`` variables one edit away from a setting's name.

    Other tools' variables that merely share the prefix are left alone.
    """
    known = {_ENV_PREFIX + name.upper() for name in _FIELDS} | {
        alias for aliases in _ALIASES.values() for alias in aliases
    }
    for name in environ:
        upper = name.upper()
        if upper in known or not upper.startswith((_ENV_PREFIX, "APCA_")):
            continue
        for valid in sorted(known):
            if one_edit_apart(upper, valid):
                message = (
                    f"environment variable {name} is not an Alpaca setting: did you mean {valid}?"
                )
                if strict:
                    raise ConfigurationError(message + " (ALPACA_STRICT_ENV is set)")
                warnings.warn(message, UnknownSettingWarning, stacklevel=4)
                break


def env_var_of(field_name: str) -> str:
    """The environment variable of a settings field (its first one for the credentials).

    Example::

        env_var_of("feed")       # 'ALPACA_FEED'
        env_var_of("api_key")    # 'APCA_API_KEY_ID'
    """
    aliases = _ALIASES.get(field_name)
    return aliases[0] if aliases else _ENV_PREFIX + field_name.upper()


def _fields_of(exc: ValidationError) -> list[str]:
    """The settings fields named by a validation error's locations, in order, once each."""
    fields: dict[str, None] = {}
    for error in exc.errors(include_url=False):
        loc = error.get("loc", ())
        if loc:
            name = _LOC_TO_FIELD.get(str(loc[0]), str(loc[0]))
            if name in _FIELDS:
                fields[name] = None
    return list(fields)


def _env_label(field_name: str) -> str:
    aliases = _ALIASES.get(field_name)
    if aliases:
        return f"{aliases[0]} (or {', '.join(aliases[1:])})"
    return _ENV_PREFIX + field_name.upper()


def _allow_insecure(info: ValidationInfo) -> bool:
    return bool(info.data.get("allow_insecure", False))


def _check_url(value: str, schemes: tuple[str, str], *, allow_insecure: bool) -> str:
    secure, plain = schemes
    value = value.strip()
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError(f"must start with {secure}:// (or {plain}:// for loopback), got {shown}")
    if not host:
        raise ValueError(f"has no host; expected {secure}://host[:port]")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@) in it")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    if parts.scheme == plain and not allow_insecure and not is_loopback(host):
        raise ValueError(
            f"plain {plain}:// to {host!r} would send the secret key unencrypted; use "
            f"{secure}://, or set ALPACA_ALLOW_INSECURE=true (loopback hosts "
            "127.0.0.0/8, ::1 and localhost are always allowed)"
        )
    return value.rstrip("/")


def _secret_candidates(values: Mapping[str, Any], *, from_env: bool) -> list[str]:
    """Strings that must never appear in an error message."""
    found: list[str] = []
    names = {*_SECRET_FIELDS, *_SECRET_ENV}
    for key, value in values.items():
        if key in names and value is not None:
            found.append(value.get_secret_value() if isinstance(value, SecretStr) else str(value))
    if from_env:
        upper = {name.upper() for name in _SECRET_ENV} | {
            _ENV_PREFIX + name.upper() for name in _SECRET_FIELDS
        }
        found.extend(v for k, v in os.environ.items() if k.upper() in upper)
    stripped = (secret.strip() for secret in found)
    return [secret for secret in stripped if secret and secret != _MASK]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _problems(exc: ValidationError, secrets: list[str], *, config: bool) -> list[str]:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc", ())
        field_name = _LOC_TO_FIELD.get(str(loc[0]), str(loc[0])) if loc else ""
        message = str(error.get("msg", "is invalid"))
        message = message.removeprefix("Value error, ")
        if not field_name:  # model-level check: its message names the fields itself
            problems.append(message)
            continue
        env = _env_label(field_name) if field_name in _FIELDS else None
        if config:
            subject = f"config key {field_name!r}"
            hint = f" (environment variable {env})" if env else ""
        else:
            subject = field_name
            hint = f": set {env}" if env else ""
        if error.get("type") == "missing":
            problems.append(f"{subject} is missing{hint}")
            continue
        shown = ""
        value = error.get("input")
        quotable = field_name in _QUOTABLE and isinstance(value, (str, int, float))
        if quotable and len(str(value)) <= 200:
            if field_name in _URL_FIELDS and isinstance(value, str):
                value = mask_url(value)
            shown = f"={value!r}"
        problems.append(f"{subject}{shown} is invalid: {message}{hint}")
    return [_redact(problem, secrets) for problem in problems]


def _redact(text: str, secrets: list[str]) -> str:
    # Case-insensitive: validators lower-case some inputs before pydantic quotes them.
    for secret in secrets:
        text = re.sub(re.escape(secret), "<secret>", text, flags=re.IGNORECASE)
    return text


def _format(problems: list[str]) -> str:
    if len(problems) == 1:
        return f"invalid Alpaca settings: {problems[0]}"
    listed = "\n".join(f"  - {problem}" for problem in problems)
    return f"invalid Alpaca settings ({len(problems)} problems):\n{listed}"


_FEED_SETTING: dict[StreamKind, tuple[str, str]] = {
    StreamKind.STOCK: ("feed", "ALPACA_FEED"),
    StreamKind.CRYPTO: ("crypto_feed", "ALPACA_CRYPTO_FEED"),
    StreamKind.OPTION: ("option_feed", "ALPACA_OPTION_FEED"),
}
