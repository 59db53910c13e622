"""Private redis-server processes for the production-Redis tests: TLS, ACL, Sentinel.

Each server runs on spare loopback ports chosen here (never 6379), without
persistence, in the test's ``tmp_path``; :class:`RedisServer` stops it (or
SIGKILLs it, to fail a primary over). Readiness and state are waited on with
deadlines (:func:`wait_for`), never with sleeps.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

_NEVER = threading.Event()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll state this test does not own (a server, Redis keys) until a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"within {timeout} s: {what}")
        _NEVER.wait(0.02)  # the polling period, bounded by the deadline above


def redis_server_problem() -> str | None:
    """Why these tests cannot run here, or ``None``."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if shutil.which("openssl") is None:
        return "the openssl command is not installed (it makes the test certificates)"
    help_text = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout
    if "v=" not in help_text:
        return f"unexpected redis-server --version output: {help_text!r}"
    return None


def spare_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nothing listens on right now (never 6379)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] == 6379:
                sock.close()
                continue
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost, by the openssl CLI."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=alpaca-di test CA", "-keyout", str(ca_key), "-out", str(ca_crt))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    return {"ca": ca_crt, "cert": crt, "key": key}


class RedisServer:
    """One redis-server (or sentinel) process; ``client()`` reaches it for the test itself."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        name: str,
        client: Callable[[], redis.Redis],
    ) -> None:
        self.name = name
        self._client = client
        self._log = (cwd / f"{name}.log").open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            ["redis-server", *args], cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.log_path = cwd / f"{name}.log"

    def client(self) -> redis.Redis:
        return self._client()

    def wait_ready(self, timeout: float = 10.0) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                log = self.log_path.read_text(encoding="utf-8")
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{log}")
            client = self._client()
            try:
                return bool(client.ping())
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()

        wait_for(answers, timeout, f"{self.name} answers PING")

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a word, as on a crash."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class PrivateRedis:
    """A plain ``redis-server`` on a spare port that a fault test kills and starts again.

    Every start is a new, empty process on the same port (Redis restarted with
    nothing on disk)::

        redis_server = PrivateRedis(tmp_path)
        redis_server.start()
        redis_server.kill()       # SIGKILL
        redis_server.start()      # back, empty
    """

    def __init__(self, cwd: Path) -> None:
        (self.port,) = spare_ports(1)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._cwd = cwd
        self._server: RedisServer | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._server = RedisServer(args, cwd=self._cwd, name="redis", client=self.client)
        self._server.wait_ready()

    def kill(self) -> None:
        """SIGKILL (a crash); the log of that process is closed."""
        if self._server is not None:
            self._server.kill()
            self._server.stop()
