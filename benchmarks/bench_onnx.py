"""Standard architectures as onnxruntime's ``quantize_static`` writes them (QDQ, int8, per tensor and per
channel) on the NPU (golden model, cycle-exact with the RTL) against onnxruntime with graph
optimizations off: LSB differences of the output, argmax agreement, bit-exactness with the host kernels
(the integer reference), cycles, utilization, energy and the share of MACs on the NPU
(``opennpu.compiler.onnx_archs``). Prints a Markdown table; ``--json FILE`` also writes the rows."""
from __future__ import annotations

import argparse
import json
import time

from opennpu.compiler.onnx_archs import ARCHITECTURES, build, compare
from opennpu.config import NpuConfig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrays", default="8x8,16x16", help="comma-separated RxC arrays")
    parser.add_argument("--samples", type=int, default=64, help="inputs per model (standard normal)")
    parser.add_argument("--only", help="comma-separated architectures (default: all)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else ARCHITECTURES
    arrays = [tuple(int(d) for d in a.split("x")) for a in args.arrays.split(",")]
    rows, start = [], time.time()
    print("| architecture | weights | array | ops (NPU) | max LSB | <= 1 LSB | argmax agrees | == reference | "
          "cycles / inference | utilization | energy nJ / inference | MACs on NPU |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for name in names:
        for per_channel in (False, True):
            blob, x = build(name, per_channel, samples=args.samples)
            for rows_, cols in arrays:
                r = compare(blob, x, NpuConfig(rows=rows_, cols=cols))
                r.update(architecture=name, weights="per channel" if per_channel else "per tensor",
                         array=f"{rows_}x{cols}", samples=args.samples)
                rows.append(r)
                argmax = "-" if r["argmax_agree"] is None else f"{100 * r['argmax_agree']:.1f} %"
                print(f"| {name} | {r['weights']} | {r['array']} | {r['ops']} ({r['npu_ops']}) | {r['max_lsb']} | "
                      f"{100 * r['within_1_lsb']:.2f} % | {argmax} | {'yes' if r['exact_vs_reference'] else 'NO'} | "
                      f"{r['cycles_per_inference']:,.0f} | {100 * r['utilization']:.1f} % | "
                      f"{r['energy_nj_per_inference']:,.0f} | {100 * r['npu_mac_fraction']:.1f} % |", flush=True)
    print(f"\n{len(rows)} runs, {args.samples} inputs each, {time.time() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["exact_vs_reference"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
