"""Standard architectures as onnxruntime's ``quantize_static`` writes them (QDQ and QLinear operators, int8,
per tensor and per channel) and as ``quantize_dynamic`` writes them, on the NPU (golden model, cycle-exact with the RTL) against onnxruntime with graph
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
    parser.add_argument("--forms", default="qdq,qoperator,dynamic",
                        help="comma-separated quantization forms: qdq (quantize_static QDQ), qoperator "
                             "(quantize_static QLinear operators), dynamic (quantize_dynamic, uint8 weights)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    forms = args.forms.split(",")
    names = args.only.split(",") if args.only else ARCHITECTURES
    arrays = [tuple(int(d) for d in a.split("x")) for a in args.arrays.split(",")]
    rows, start = [], time.time()
    print("| architecture | form | weights | array | ops (NPU) | max LSB | <= 1 LSB | argmax agrees | == reference | "
          "cycles / inference | utilization | energy nJ / inference | MACs on NPU |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    refused = []
    for name in names:
        for form in forms:
            for per_channel in (False, True):
                weights = "per channel" if per_channel else "per tensor"
                blob, x = build(name, per_channel, samples=args.samples, qoperator=form == "qoperator",
                                dynamic="uint8" if form == "dynamic" else None)
                for rows_, cols in arrays:
                    try:
                        r = compare(blob, x, NpuConfig(rows=rows_, cols=cols))
                    except ValueError as error:          # a form the importer refuses, with its reason
                        refused.append(f"{name} {form} {weights}: {error}")
                        break
                    r.update(architecture=name, form=form, weights=weights, array=f"{rows_}x{cols}",
                             samples=args.samples)
                    rows.append(r)
                    print(_row(r), flush=True)
    print(f"\n{len(rows)} runs, {args.samples} inputs each, {time.time() - start:.0f} s")
    for line in refused:
        print(f"refused: {line}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["exact_vs_reference"] for r in rows) else 1


def _row(r: dict) -> str:
    """One Markdown row; a float32 output (dynamic quantization, a float last LayerNorm) shows its largest
    absolute difference from onnxruntime (dynamic: also from ONNX's reference evaluator) instead of LSBs."""
    if r["max_lsb"] is not None:
        diff, within = str(r["max_lsb"]), f"{100 * r['within_1_lsb']:.2f} %"
    else:
        diff, within = f"abs {r['max_abs']:.3g}", "-"
        if "max_abs_vs_onnx_reference" in r:
            diff += f" (reference {r['max_abs_vs_onnx_reference']:.3g})"
    argmax = "-" if r["argmax_agree"] is None else f"{100 * r['argmax_agree']:.1f} %"
    return (f"| {r['architecture']} | {r['form']} | {r['weights']} | {r['array']} | {r['ops']} ({r['npu_ops']}) | "
            f"{diff} | {within} | {argmax} | {'yes' if r['exact_vs_reference'] else 'NO'} | "
            f"{r['cycles_per_inference']:,.0f} | {100 * r['utilization']:.1f} % | {r['energy_nj_per_inference']:,.0f} | "
            f"{100 * r['npu_mac_fraction']:.1f} % |")


if __name__ == "__main__":
    raise SystemExit(main())
