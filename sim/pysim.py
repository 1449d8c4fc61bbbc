"""Run a ``Program`` on the RTL with Amaranth's Python simulator.

Three testbenches drive the streams (commands, data-in, data-out); with ``backpressure=seed`` each
inserts seeded random gaps (valid low / ready low) so that every stall path of the NPU is exercised.
"""
from __future__ import annotations

import random

from amaranth.sim import Simulator

from opennpu.config import NpuConfig
from opennpu.golden.isa import ErrorCode
from opennpu.golden.model import COUNTER_BEATS_BYTES, reported_counters
from opennpu.golden.program import Program, Result, decode_counters
from opennpu.hdl.controller import check_rtl_config
from opennpu.hdl.top import NpuTop

from .driver import program_words

__all__ = ["run_pysim", "split_beats"]


def split_beats(data: bytes, bus_bytes: int) -> list[int]:
    if len(data) % bus_bytes:
        raise ValueError(f"data-in length {len(data)} is not a whole number of {bus_bytes}-byte beats")
    return [int.from_bytes(data[i:i + bus_bytes], "little") for i in range(0, len(data), bus_bytes)]


def run_pysim(config: NpuConfig, program: Program, *, backpressure: int | None = None,
              vcd: str | None = None, gtkw: str | None = None, max_cycles: int = 2_000_000) -> Result:
    """Simulate ``program`` from reset until the NPU is idle; returns outputs, counters and status.

    ``max_cycles`` bounds the whole run (sending the commands included): over it, ``TimeoutError``.
    """
    check_rtl_config(config)
    words = program_words(config, program)
    dut = NpuTop(config)
    beats = split_beats(program.data_in, config.bus_bytes)
    outputs: list[int] = []
    done = {}

    def gaps(rng):
        """Random idle cycles before a transfer (none without back-pressure)."""
        return 0 if rng is None or rng.random() < 0.5 else rng.randint(1, 3)

    def rng_for(stream):
        return None if backpressure is None else random.Random(f"{backpressure}-{stream}")

    def ticker(ctx, limit=None):
        """``await tick(*signals)``: one cycle, True if every signal was 1 at its clock edge; past
        ``limit`` cycles (the whole run's, sending the commands included) ``TimeoutError``."""
        cycles = 0

        async def tick(*signals):
            nonlocal cycles
            cycles += 1
            if limit is not None and cycles > limit:
                raise TimeoutError(f"NPU not idle after {limit} cycles: it reached the cycle limit")
            _, _, *values = await ctx.tick().sample(*signals)
            return all(values)
        return tick

    async def send(ctx, port, payloads, rng, tick):
        for payload in payloads:
            for _ in range(gaps(rng)):
                await tick()
            ctx.set(port.payload, payload)
            ctx.set(port.valid, 1)
            while not await tick(port.ready):
                pass
            ctx.set(port.valid, 0)

    async def commands(ctx):
        tick = ticker(ctx, max_cycles)
        await send(ctx, dut.cmd, [{"word": w, "last": int(i == len(words) - 1)} for i, w in enumerate(words)],
                   rng_for("cmd"), tick)
        while not ctx.get(dut.status.idle):
            await tick()
        readout = b""
        for beat in range(config.beats(COUNTER_BEATS_BYTES)):        # the counters' readout port
            ctx.set(dut.counter_sel, beat)
            readout += ctx.get(dut.counter_beat).to_bytes(config.bus_bytes, "little")
        done["counters"] = decode_counters(readout)
        done["error"] = ctx.get(dut.status.error)
        done["rejected"] = ctx.get(dut.status.rejected)

    async def data_in(ctx):
        await send(ctx, dut.din, beats, rng_for("din"), ticker(ctx))

    async def data_out(ctx):
        rng = rng_for("dout")
        while True:
            ready = 1 if rng is None else int(rng.random() < 0.6)
            ctx.set(dut.dout.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.dout.valid, dut.dout.payload)
            if valid and ready:
                outputs.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(commands)
    sim.add_testbench(data_in, background=True)
    sim.add_testbench(data_out, background=True)
    if vcd:
        from .waves import gtkw_traces
        with sim.write_vcd(vcd, gtkw_file=gtkw, traces=gtkw_traces(dut)):
            sim.run()
    else:
        sim.run()
    out = b"".join(v.to_bytes(config.bus_bytes, "little") for v in outputs)
    return Result(out, reported_counters(config, done["counters"]), ErrorCode(done["error"]), done["rejected"])
