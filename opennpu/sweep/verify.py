"""Verilator spot-checks: a fraction of a sweep's ``ok`` points is run again on the RTL (Verilator) and
every counter and the outputs are compared with the golden model's.

Spec: ``[verify] fraction = 0.05, max_configs = 2``. ``select`` takes the points in key order (keys are
hashes, so an arbitrary but stable sample) and keeps at most ``max_configs`` distinct configurations,
because each one needs its own Verilator build (minutes; cached afterwards). Without back-pressure the
RTL's ``cycles`` include any ``stall_cycles`` (waits on the host streams) that the golden model does not
have; every other counter must be equal, as in ``opennpu gemm --backend verilator``.
"""
from __future__ import annotations

import math
import time

from .point import measure

__all__ = ["select", "spot_check", "BACKEND"]

BACKEND = "verilator"


def select(candidates: list, fraction: float, max_configs: int) -> list:
    """``ceil(fraction * len(candidates))`` of the ``(key, point)`` pairs (fewer if the configuration cap
    leaves fewer), from at most ``max_configs`` configurations."""
    want = math.ceil(fraction * len(candidates))
    chosen, configs = [], set()
    for key, point in sorted(candidates, key=lambda pair: pair[0]):
        if len(chosen) == want:
            break
        digest = point.config.digest()
        if digest not in configs and len(configs) == max_configs:
            continue
        configs.add(digest)
        chosen.append((key, point))
    return chosen


def spot_check(point, model_bytes: bytes | None = None) -> dict:
    """``{"backend", "status", "differ", "error", "wall_s"}``: ``"equal"`` when every counter and the
    outputs match, ``"differ"`` naming what does not, ``"failed"`` with the error (e.g. no Verilator)."""
    start = time.perf_counter()
    try:
        golden = measure(point, model_bytes)
        rtl = measure(point, model_bytes, BACKEND)
        stalls = rtl.counters["stall_cycles"]
        differ = [name for name, value in golden.counters.items()
                  if rtl.counters[name] != value + (stalls if name in ("cycles", "stall_cycles") else 0)]
        if not _same(golden.outputs, rtl.outputs):
            differ.append("outputs")
        record = {"status": "differ" if differ else "equal", "differ": " ".join(differ), "error": ""}
    except Exception as error:                                         # noqa: BLE001 - recorded, never raised
        record = {"status": "failed", "differ": "", "error": f"{type(error).__name__}: {error}".splitlines()[0]}
    return {"backend": BACKEND, **record, "wall_s": time.perf_counter() - start}


def _same(a, b) -> bool:
    import numpy as np
    return bool(np.array_equal(a, b))
