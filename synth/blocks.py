"""Out-of-context Fmax of single NPU blocks on the ECP5-85F: where the clock period goes.

A board build (``synth/flow.py``) reports one worst path for the whole design. ``block_fmax`` places and
routes one block on its own (``nextpnr-ecp5 --out-of-context``: no I/O buffers, no global clock
routing), so each block's own register-to-register limit is measured apart from the rest.

The block sits in a harness that makes every path register-to-register and keeps all logic alive:
its inputs come from a shift register fed 64 bits per cycle, its outputs are registered and folded
into a 64-bit XOR register. The harness adds one register level at each side and no logic between
the block's ports and those registers, so the reported Fmax is the block's internal limit or a
port-to-register path with no logic of its own.

Blocks (``BLOCKS``): ``array`` (the systolic array of the configured dataflow, DSP multipliers),
``activation`` (the fused activation unit, ``cols`` lanes), ``npu`` (``NpuTop``: the whole NPU without
the UART host link and PLL).
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from opennpu.config import NpuConfig

from .flow import BuildFailed, _tool_env
from .boards import get_board

__all__ = ["BLOCKS", "BlockResult", "block_fmax"]

BLOCKS = ("array", "activation", "npu")
_DEVICE = ("--85k", "--package", "CABGA381", "--speed", "6")      # the ULX3S-85F's LFE5U-85F-6


@dataclass
class BlockResult:
    block: str
    array: str
    fmax_mhz: float
    target_mhz: float
    luts: int
    ffs: int
    dsps: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _block(name: str, config: NpuConfig):
    if name == "array":
        from opennpu.hdl.engine import array_for
        return array_for(config)
    if name == "activation":
        from opennpu.hdl.activation import ActivationUnit
        return ActivationUnit(config.cols, min(config.bus_bytes, 256))
    if name == "npu":
        from opennpu.hdl.top import NpuTop
        return NpuTop(config)
    raise ValueError(f"unknown block {name!r}; expected one of {', '.join(BLOCKS)}")


def harness(block):
    """A component with a 64-bit input and output around ``block`` (see the module docstring)."""
    from amaranth import Cat, Module, Signal, Value
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    ports = list(block.signature.flatten(block))
    inputs = [Value.cast(value) for _, member, value in ports if member.flow == wiring.In]
    outputs = [Value.cast(value) for _, member, value in ports if member.flow == wiring.Out]

    class Harness(wiring.Component):
        def __init__(self):
            super().__init__({"i": In(64), "o": Out(64)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.block = block
            chain = Signal(max(64, sum(len(v) for v in inputs)))
            m.d.sync += chain.eq(Cat(self.i, chain[:-64]))
            pos = 0
            for port in inputs:
                m.d.comb += port.eq(chain[pos:pos + len(port)])
                pos += len(port)
            captured = Signal(sum(len(v) for v in outputs))
            m.d.sync += captured.eq(Cat(*outputs))
            m.d.sync += self.o.eq(Cat(*(captured[k::64].xor() for k in range(64))))
            return m

    return Harness()


def block_fmax(block: str, config: NpuConfig, *, target_mhz: float = 125.0,
               build_dir: str | Path = "build/blocks", seed: int | None = None) -> BlockResult:
    """Synthesize and place-and-route ``block`` out of context on the ECP5-85F; Fmax and resources."""
    from amaranth.back import rtlil

    env = _tool_env(get_board("ulx3s-85f"), check=True)
    work = Path(build_dir) / f"{block}-{config.array}-{config.dataflow}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.il").write_text(rtlil.convert(harness(_block(block, config)), name="top"))
    started = time.monotonic()
    # (The YoWASP tools only see the working directory: relative paths.)
    steps = [
        [env["YOSYS"], "-q", "-l", "yosys.log", "-p",
         "read_rtlil top.il; synth_ecp5 -abc9 -top top -json top.json; tee -q -o stat.txt stat"],
        [env["NEXTPNR_ECP5"], *_DEVICE, "--json", "top.json", "--out-of-context", "--freq", str(target_mhz),
         "--router", "router2", "--timing-allow-fail", "--report", "report.json", "-l", "pnr.log", "-q",
         *(["--seed", str(seed)] if seed is not None else [])],
    ]
    for command in steps:
        proc = subprocess.run(command, cwd=work, capture_output=True, text=True)
        if proc.returncode:
            log = work / ("yosys.log" if command is steps[0] else "pnr.log")
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else proc.stderr
            raise BuildFailed(f"{block} {config.array}: {Path(command[0]).name} failed (exit {proc.returncode})",
                              tail)
    report = json.loads((work / "report.json").read_text())
    fmax = min(clock["achieved"] for clock in report["fmax"].values())
    util = {cell: used["used"] for cell, used in report["utilization"].items()}
    return BlockResult(block=block, array=config.array, fmax_mhz=round(fmax, 1), target_mhz=target_mhz,
                       luts=util.get("TRELLIS_COMB", 0), ffs=util.get("TRELLIS_FF", 0),
                       dsps=util.get("MULT18X18D", 0), seconds=round(time.monotonic() - started, 1))
