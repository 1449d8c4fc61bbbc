"""``opennpu synth``: build the board design with the open toolchain and report resources and Fmax."""
from __future__ import annotations

from opennpu.cli_common import busy, emit, fail
from opennpu.config import DATAFLOWS, parse_array

__all__ = ["register"]


def register(sub):
    from opennpu.synth.boards import BOARDS
    synth = sub.add_parser("synth", help="FPGA build (amaranth-boards + YoWASP): resources, Fmax, bitstream")
    synth.add_argument("--board", required=True, help=f"one of: {', '.join(BOARDS)}")
    synth.add_argument("--array", default="8x8", help="systolic array RxC (default 8x8)")
    synth.add_argument("--dataflow", default="ws", choices=DATAFLOWS, help="weight- or output-stationary")
    synth.add_argument("--freq", type=float, default=None, metavar="MHZ",
                       help="core clock target made by the PLL (default: the board's)")
    synth.add_argument("--act-depth", type=int, default=None, help="activation SRAM words (default: the board's)")
    synth.add_argument("--wgt-depth", type=int, default=None, help="weight SRAM words (default: the board's)")
    synth.add_argument("--acc-depth", type=int, default=None, help="accumulator SRAM words (default: the board's)")
    synth.add_argument("--baud", type=int, default=115_200, help="UART host link rate (default 115200)")
    synth.add_argument("--seed", type=int, default=None, help="nextpnr placement seed")
    synth.add_argument("--timeout", type=float, default=None, metavar="S",
                       help="stop the tools after S seconds (an error, exit 2)")
    synth.add_argument("--build-dir", default=None, help="build directory (default build/<board>-<array>)")
    synth.add_argument("--plan-only", action="store_true", help="write the build files, run no tool")
    synth.add_argument("--json", action="store_true", help="print one JSON object")
    synth.set_defaults(func=_cmd_synth)


def _text(r) -> str:
    util = r.utilization
    lines = [f"{r.board} {r.array}: {'fits' if r.fits else 'DOES NOT FIT'}, "
             f"timing {'met' if r.timing_met else 'NOT met'}",
             f"  LUTs      {r.luts}" + (f"  (of {util['TRELLIS_COMB'][1]})" if "TRELLIS_COMB" in util else ""),
             f"  FFs       {r.ffs}",
             f"  DSPs      {r.dsps}",
             f"  BRAMs     {r.brams}",
             f"  Fmax      {r.fmax_mhz:.1f} MHz (target {r.target_mhz:.1f} MHz)" if r.fmax_mhz else
             f"  Fmax      unknown (target {r.target_mhz:.1f} MHz)",
             f"  seed      {r.seed if r.seed is not None else 'nextpnr default'}",
             f"  bitstream {r.bitstream}",
             f"  build     {r.seconds:.0f} s in {r.build_dir}"]
    lines += [f"    {cell:16s} {used:6d} / {avail}" for cell, (used, avail) in sorted(util.items()) if used]
    return "\n".join(lines)


def _cmd_synth(args) -> int:
    from opennpu.synth.boards import get_board
    from opennpu.synth.flow import BuildFailed, plan, synth_config, synthesize
    board = get_board(args.board)
    rows, cols = parse_array(args.array)
    config = synth_config(board, rows, cols, dataflow=args.dataflow, act_depth=args.act_depth,
                          wgt_depth=args.wgt_depth, acc_depth=args.acc_depth)
    if args.plan_only:
        build_plan = plan(board, config, freq_mhz=args.freq, baud=args.baud, seed=args.seed)
        directory = args.build_dir or f"build/{board.name}-{config.array}"
        build_plan.extract(directory)
        emit(args, {"board": board.name, "array": config.array, "build_dir": directory,
                    "files": sorted(build_plan.files)}, f"wrote the build files to {directory}")
        return 0
    try:
        with busy(args, f"building {board.name} {config.array} (minutes)"):
            result = synthesize(board, config, freq_mhz=args.freq, baud=args.baud, seed=args.seed,
                                timeout_s=args.timeout,
                                build_dir=args.build_dir or f"build/{board.name}-{config.array}")
    except BuildFailed as error:
        return fail(args, f"{error}; {error.log_tail.splitlines()[-1] if error.log_tail else 'see the build log'}")
    report = result.to_dict()
    report.pop("yosys_cells")
    emit(args, report, _text(result))
    return 0 if result.fits else 1
