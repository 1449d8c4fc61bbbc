"""A throw-away Ray cluster on this machine, ``ray start --head --block`` in its own process group, for
the cluster test and the throughput benchmark: ``with head_node(num_cpus=2) as address: ...``."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["head_node"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def head_node(num_cpus: int = 2, timeout_s: float = 120):
    """Start a head node on a free localhost port, without token authentication (it listens on
    127.0.0.1 only); yields its address; stops it (the whole process group) on exit. ``RuntimeError`` with the node's log if it does not come up in ``timeout_s``."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="opennpu-ray-head-") as folder:
        log_path = Path(folder) / "head.log"
        with log_path.open("w") as log:
            head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
                                     "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--include-dashboard=false",
                                     "--disable-usage-stats", "--block"],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "RAY_AUTH_MODE": "disabled"})
            try:
                deadline = time.monotonic() + timeout_s
                while "Ray runtime started" not in log_path.read_text():
                    if head.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"ray start --head did not come up:\n{log_path.read_text()[-2000:]}")
                    time.sleep(0.5)
                yield f"127.0.0.1:{port}"
            finally:
                os.killpg(head.pid, signal.SIGTERM)
                try:
                    head.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(head.pid, signal.SIGKILL)
                    head.wait()
