"""``alpaca-di health``: check a running application, or connect and check the account.

**A running application** (``--url``): the application serves its own health with
:func:`~alpaca_di.serve_health`; the command asks it over HTTP and opens no
WebSocket at all (a second socket of the same account would be refused with
``406 connection limit exceeded`` by the application's own connection)::

    $ alpaca-di health --url http://127.0.0.1:8080            # healthy and ready?
    $ alpaca-di health --url http://127.0.0.1:8080 --ready    # GET /readyz only
    $ alpaca-di health --url http://127.0.0.1:8080 --live     # GET /healthz only

``--url`` is the server's base URL (a trailing ``/healthz`` or ``/readyz`` is
accepted and replaced); the answer's JSON report goes to stdout. Exit codes: 0
when the probe passes (without ``--ready``/``--live``: healthy *and* ready); 1
when it does not (the connections in the way are named on stderr); 2 for bad
arguments, an unreachable URL or an answer that is not a health report.

**A fresh connection** (no ``--url``): it builds an :class:`~alpaca_di.AlpacaContainer`
from the environment (``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``, ``ALPACA_*``;
see :class:`~alpaca_di.settings.AlpacaSettings`), opens each requested stream
(``--streams``, default ``stock``) without subscribing to anything, waits up to
``--timeout`` seconds for every one to be connected and authenticated, prints
``container.health()`` as JSON on stdout, and closes everything. Do not point it
at the account of a running application: its sockets would be the second ones::

    $ alpaca-di health --streams stock,trading --timeout 10
    {"generated_at": "...", "healthy": true, "connections": [{"kind": "stock", ...}, ...]}

``--emulator`` runs the same check against the embedded
:class:`~alpaca_di.testing.AlpacaEmulator` (no account needed).

Exit codes: 0 when every requested connection is ``connected``; 1 when one is
not (failed, refused, timed out; the reason goes to stderr and the report still
prints); 2 when the settings are missing or invalid (the message names the
environment variables at fault; the secret is never printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from alpaca_di.containers import AlpacaContainer
    from alpaca_di.errors import ConfigurationError
    from alpaca_di.hub.hub import StreamHub

__all__ = ["STREAMS", "configure", "endpoint_url", "probe_url", "run", "settings_problem"]

STREAMS: tuple[str, ...] = ("stock", "crypto", "option", "news", "trading")
"""The stream names ``--streams`` accepts."""

_EMULATOR_KEY_ID = "PKHEALTHCHECK001"
_EMULATOR_SECRET = "alpaca-di-health-secret-not-a-real-key"  # noqa: S105 - emulator placeholder


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``health`` subcommand's arguments."""
    parser.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help="ask a running application's health endpoint (alpaca_di.serve_health) at this "
        "base URL, e.g. http://127.0.0.1:8080, instead of opening sockets",
    )
    probe = parser.add_mutually_exclusive_group()
    probe.add_argument(
        "--ready",
        dest="probe",
        action="store_const",
        const="ready",
        help="with --url: pass when the application is ready (GET /readyz)",
    )
    probe.add_argument(
        "--live",
        dest="probe",
        action="store_const",
        const="live",
        help="with --url: pass when the application is healthy (GET /healthz)",
    )
    parser.add_argument(
        "--streams",
        type=_streams,
        default=None,
        help=f"without --url: comma-separated streams to connect: {','.join(STREAMS)} "
        "or all (default: stock)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        help="seconds each stream may take to connect and authenticate, or the endpoint "
        "to answer with --url (default 10)",
    )
    parser.add_argument(
        "--emulator",
        action="store_true",
        help="without --url: check against the embedded emulator instead of the "
        "environment's account",
    )


def run(args: argparse.Namespace) -> int:
    """Probe ``--url``, or connect, wait and print the report; returns the exit code."""
    if args.url is not None:
        if args.emulator or args.streams is not None:
            return _usage("--url asks a running application: --emulator and --streams do not apply")
        return probe_url(args.url, args.probe, args.timeout)
    if args.probe is not None:
        return _usage(f"--{args.probe} needs --url (the health endpoint of a running application)")
    return _check_account(args.streams or ("stock",), args.timeout, emulated=args.emulator)


def probe_url(url: str, probe: str | None = None, timeout: float = 10.0) -> int:
    """Ask a :func:`~alpaca_di.serve_health` endpoint; print its report; the exit code.

    ``probe`` is ``"live"`` (``GET /healthz``), ``"ready"`` (``GET /readyz``) or
    ``None`` (``GET /readyz``, and the report must be healthy too). No WebSocket
    is opened and no settings are read::

        probe_url("http://127.0.0.1:8080", "ready")    # 0, 1 or 2
    """
    try:
        target = endpoint_url(url, probe)
    except ValueError as exc:
        return _usage(str(exc))
    status, text = _get(target, timeout)
    if status is None:
        print(f"alpaca-di health: cannot reach {target}: {text}", file=sys.stderr)
        return 2
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "healthy" not in body or status not in (200, 503):
        print(
            f"alpaca-di health: {target} answered HTTP {status} without a health report: "
            "is it an alpaca_di.serve_health endpoint?",
            file=sys.stderr,
        )
        return 2
    sys.stdout.write(json.dumps(body, indent=2) + "\n")
    sys.stdout.flush()
    passed = status == 200
    if probe is None:
        passed = passed and body.get("healthy") is True and body.get("ready") is True
    if not passed:
        print(f"alpaca-di health: {_why_not(body, probe)}", file=sys.stderr)
    return 0 if passed else 1


def endpoint_url(url: str, probe: str | None) -> str:
    """The probe's URL under the base ``url`` (``/readyz``, or ``/healthz`` for ``live``).

    Example::

        endpoint_url("http://127.0.0.1:8080", "live")   # 'http://127.0.0.1:8080/healthz'
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url must be an http:// or https:// URL with a host, got {url!r}")
    path = parts.path.rstrip("/")
    if path.rsplit("/", 1)[-1] in ("healthz", "livez", "readyz"):
        path = path.rsplit("/", 1)[0]
    leaf = "healthz" if probe == "live" else "readyz"
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/{leaf}", parts.query, ""))


def _get(url: str, timeout: float) -> tuple[int | None, str]:
    """(status, body), or (None, the reason) when nothing answered. Proxies are ignored."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    # S310: endpoint_url() admits only http:// and https://.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8", "replace")
    except urllib.error.URLError as exc:
        return None, str(exc.reason)
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed answers
        return None, f"{type(exc).__name__}: {exc}"


def _why_not(body: dict[str, Any], probe: str | None) -> str:
    """Which connections fail the probe, in one line."""
    if body.get("error"):
        return f"the application could not build its report: {body['error']}"
    verdict = "healthy" if probe == "live" else "ready"
    if probe is None and body.get("ready") is True:
        verdict = "healthy"
    blocking = []
    for connection in body.get("connections") or ():
        if not isinstance(connection, dict):
            continue
        if verdict == "ready" and connection.get("in_use") and not connection.get("ready"):
            pending = connection.get("subscriptions_pending") or 0
            detail = f", {pending} subscription(s) unconfirmed" if pending else ""
            blocking.append(f"{connection.get('kind')} {connection.get('state')}{detail}")
        elif verdict == "healthy" and connection.get("healthy") is False:
            blocking.append(f"{connection.get('kind')} {connection.get('state')}")
    return f"not {verdict}: " + ("; ".join(blocking) or "see the report")


def _usage(message: str) -> int:
    print(f"alpaca-di health: {message}", file=sys.stderr)
    return 2


def _check_account(streams: tuple[str, ...], timeout: float, *, emulated: bool) -> int:
    """Connect ``streams`` with the environment's (or the emulator's) account."""
    from alpaca_di.containers import AlpacaContainer
    from alpaca_di.errors import ConfigurationError

    container = AlpacaContainer()
    emulator = None
    if emulated:
        from alpaca_di.emulator import AlpacaEmulator

        emulator = AlpacaEmulator().start()
        container.config.from_dict(
            {
                "api_key": _EMULATOR_KEY_ID,
                "secret_key": _EMULATOR_SECRET,
                "data_stream_url": emulator.ws_url,
                "trading_stream_url": emulator.trading_stream_url,
                "api_url": emulator.api_url,
            }
        )
    try:
        try:
            container.settings()
        except ConfigurationError as exc:
            print(f"alpaca-di health: {settings_problem(exc)}\n{exc}", file=sys.stderr)
            return 2
        try:
            healthy = _connect(container, streams, timeout)
            report = container.health()
            sys.stdout.write(report.model_dump_json(indent=2) + "\n")
            sys.stdout.flush()
        finally:
            container.shutdown_resources()
    finally:
        if emulator is not None:
            emulator.stop()
    return 0 if healthy and report.healthy else 1


def settings_problem(exc: ConfigurationError) -> str:
    """The first line of the bad-settings message: the variables at fault, never a value.

    Example::

        settings_problem(exc)   # 'invalid or missing setting ALPACA_FEED (or use --emulator)'
    """
    names = exc.env_vars
    if not names:
        return "the Alpaca settings are missing or invalid (see below, or use --emulator)"
    plural = "s" if len(names) > 1 else ""
    return f"invalid or missing setting{plural} {', '.join(names)} (or use --emulator)"


def _connect(container: AlpacaContainer, streams: tuple[str, ...], timeout: float) -> bool:
    """Open every stream at once and wait for each; report failures on stderr."""
    hubs: dict[str, StreamHub] = {name: getattr(container, f"{name}_stream")() for name in streams}
    errors: dict[str, str] = {}

    def wait(name: str, hub: StreamHub) -> None:
        try:
            hub.wait_ready(timeout)
        except Exception as exc:  # reported; the report shows the state
            errors[name] = f"{type(exc).__name__}: {exc}"

    threads = [
        threading.Thread(target=wait, args=(name, hub), name=f"health-{name}", daemon=True)
        for name, hub in hubs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in streams:
        if name in errors:
            print(f"alpaca-di health: {name} stream: {errors[name]}", file=sys.stderr)
    if any("ConnectionLimitError" in error for error in errors.values()):
        print(
            "alpaca-di health: another process holds this account's connection (406): "
            "to check a running application, serve its health (alpaca_di.serve_health) "
            "and use --url",
            file=sys.stderr,
        )
    return not errors


def _streams(text: str) -> tuple[str, ...]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return STREAMS
    unknown = sorted(set(names) - set(STREAMS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stream(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(STREAMS)} or all"
        )
    return tuple(dict.fromkeys(names))


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value
