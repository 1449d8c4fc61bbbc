"""Fault campaign on the host link: the NPU on Verilator behind the real HostLink, the real host driver.

Long random programs (every command kind, malformed words, an SRAM read-back; over 256 command and
data-in frames each) and long GEMMs (2593 command frames, 264 data-in frames) run through
``sim/uart_host.UartHost`` over a byte channel (``sim/link_faults.FaultyLink``) that flips bits,
drops bytes, truncates frames, puts garbage between frames, and reorders and duplicates frames, in
both directions, at several fault rates per frame. Every run is classified against the golden model
(outputs, error code, rejected count, counters): correct, raised a typed error, wrong result (must be
0), hang (must be 0; a hard limit on simulated cycles and wall time).

    python benchmarks/bench_link_faults.py [--programs 16] [--gemms 4] [--seed 1818] [--json]

2x2 array, small SRAMs, 16-byte frames, 12 cycles per byte (the UART's bit timing is the only part
bypassed). The model is built once and cached (``sim/verilator_link.py``).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from programs import long_program  # noqa: E402

from opennpu.compiler.gemm import build_gemm, random_gemm  # noqa: E402
from opennpu.config import NpuConfig  # noqa: E402
from opennpu.sim.link_faults import DIRECTIONS, FAULT_KINDS, run_campaign  # noqa: E402

CONFIG = NpuConfig(rows=2, cols=2, act_depth=32, wgt_depth=16, acc_depth=16)
FRAME_MAX = 16
#: (host -> device, device -> host) probability of a fault per frame.
RATES = ((0.01, 0.001), (0.03, 0.003), (0.1, 0.02))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=16, help="long random programs")
    parser.add_argument("--gemms", type=int, default=4, help="long GEMMs (24x16x16)")
    parser.add_argument("--seed", type=int, default=1818)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    programs = [long_program(CONFIG, random.Random(args.seed + i), commands=300, data_bytes=300 * FRAME_MAX)
                for i in range(args.programs)]
    programs += [build_gemm(CONFIG, random_gemm(24, 16, 16, "int8", "relu", seed=s)).program
                 for s in range(args.gemms)]
    start = time.perf_counter()
    figures = run_campaign(CONFIG, programs, seed=args.seed, frame_max=FRAME_MAX, rates=RATES)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps({"runs": figures.runs, "correct": figures.correct, "error": figures.error,
                          "wrong": figures.wrong, "hang": figures.hang, "faults": figures.faults,
                          "injected": {f"{d}/{k}": figures.injected[d, k] for d in DIRECTIONS for k in FAULT_KINDS},
                          "resent": figures.resent, "reruns": figures.reruns, "frames": list(figures.frames),
                          "errors": figures.details, "seconds": round(elapsed, 1)}, indent=1))
    else:
        print(f"fault campaign: {len(programs)} programs x {len(RATES)} fault rates {RATES}, {elapsed:.0f} s")
        print(figures.report())
    return 0 if figures.wrong == 0 and figures.hang == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
