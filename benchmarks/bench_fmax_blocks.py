"""Out-of-context Fmax of the NPU's blocks on the ECP5-85F (``synth/blocks.py``), next to nothing else.

Prints, per block and array size, the Fmax nextpnr reaches against the 125 MHz target of issue 6 and
the block's LUTs / FFs / DSPs, so the limit of the datapath (systolic array, activation unit) can be
told apart from the limit of the whole NPU. Needs the YoWASP tools (``pip install opennpu[fpga]``);
each block takes ~1-10 min on this 2-core machine.

    python benchmarks/bench_fmax_blocks.py [--arrays 2x2,8x8] [--blocks array,activation,npu] [--json]
"""
from __future__ import annotations

import argparse
import json

from opennpu.config import NpuConfig, parse_array
from opennpu.synth.blocks import BLOCKS, block_fmax


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", default="2x2,8x8")
    ap.add_argument("--blocks", default=",".join(BLOCKS))
    ap.add_argument("--dataflow", default="ws", choices=("ws", "os"))
    ap.add_argument("--freq", type=float, default=125.0, help="target MHz")
    ap.add_argument("--build-dir", default="build/blocks")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for array in args.arrays.split(","):
        r, c = parse_array(array)
        # The board builds' small SRAMs: the array and activation blocks do not depend on them.
        config = NpuConfig(rows=r, cols=c, dataflow=args.dataflow, act_depth=512, wgt_depth=256, acc_depth=128)
        for block in args.blocks.split(","):
            result = block_fmax(block, config, target_mhz=args.freq, build_dir=args.build_dir)
            rows.append(result.to_dict())
            if not args.json:
                print(f"{block:>10} {result.array:>5}  {result.fmax_mhz:6.1f} MHz (target {result.target_mhz:.0f})"
                      f"  {result.luts:6d} LUTs {result.ffs:6d} FFs {result.dsps:4d} DSPs  {result.seconds:6.0f} s",
                      flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
