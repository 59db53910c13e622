"""A worker process of the multiprocess metrics test (one of several "uvicorn workers").

Run with ``PROMETHEUS_MULTIPROC_DIR`` set: ``python _metrics_worker.py WS_URL KEY SECRET
[serve]``. It subscribes a consumer named ``worker`` to AAPL quotes, registers the
metrics (multiprocess mode, writing every 50 ms), prints ``ready`` (and, with
``serve``, ``url <health server URL>``), then exits cleanly when stdin closes or
says ``exit``.
"""

from __future__ import annotations

import os
import sys

from alpaca_di import ConnectionRegistry, Credentials, StreamKind, register_metrics, serve_health
from alpaca_di.testing import Recorder


def main() -> int:
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "run with PROMETHEUS_MULTIPROC_DIR set"
    ws_url, key, secret = sys.argv[1:4]
    serve = sys.argv[4:] == ["serve"]
    metrics = register_metrics(interval=0.05)
    assert metrics.multiprocess
    registry = ConnectionRegistry()
    lease = registry.acquire(Credentials(key, secret), StreamKind.STOCK, ws_url + "/v2/iex")
    try:
        sub = lease.hub.subscribe(Recorder(), quotes=["AAPL"], name="worker")
        sub.wait_confirmed(30)
        server = serve_health(registry) if serve else None
        if server is not None:
            print("url", server.url, flush=True)
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "exit":
                break
        if server is not None:
            server.close()
        sub.close()
    finally:
        lease.release()
        metrics.close()  # a last write, then the writer thread stops
    return 0


if __name__ == "__main__":
    sys.exit(main())
