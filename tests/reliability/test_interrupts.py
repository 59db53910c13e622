"""Ctrl-C (a real SIGINT) at random points of ``init_resources()`` leaves nothing behind.

Each of 150 runs arms a SIGINT at a random moment of the first 30 ms of
``init_resources()`` + ``wait_ready()`` + ``listen()``, catches the
``KeyboardInterrupt``, shuts the container down and checks that its registry
holds no hub (no lease was lost); at the end no runtime thread, runtime user or
open session is left. The bookkeeping that a ``KeyboardInterrupt`` could tear
(starting the runtime thread, taking a lease) defers SIGINT until it is done.
It runs in a subprocess so that a stray ``KeyboardInterrupt`` can never reach pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_interrupt_worker.py")


@pytest.mark.parametrize("seed", [1, 2])
def test_sigint_anywhere_in_init_resources_leaves_no_thread_lease_or_socket(seed: int) -> None:
    done = subprocess.run(
        [sys.executable, str(WORKER), str(seed), "150"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"interrupts during init_resources (seed {seed}): {result}")
    assert result["interrupted"] > 0
    assert result["hubs_left"] == 0
    assert result["sessions_left"] == 0
    assert result["runtime_users"] == 0
    assert result["runtime_running"] is False
    assert result["threads_left"] == 0
