"""The block-RAM SRAM structures of ``hdl/sram.py``.

``DualWriteMemory`` defers a write by one cycle when both writers hit the same bank; it is exact only
under the dispatcher's contract. The random programs below overlap LOAD (LD writes) with
ACTIVATE-to-SRAM (ACT writes) at every address parity, read everything back through COMPUTE and
STORE, and compare the RTL with the golden model (outputs and every counter).
"""
import random

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from opennpu.golden.deps import order_program
from opennpu.config import NpuConfig
from opennpu.golden.isa import ActFn, Buf, Command, Opcode
from opennpu.golden.model import GoldenNpu
from opennpu.golden.program import Program
from opennpu.hdl.sram import DualWriteMemory, ReplicatedMemory
from opennpu.sim.driver import Npu


def _random_program(config, rng, steps=6):
    c = config
    cmds, data = [], bytearray()

    def load(buf, addr, rows):
        cmds.append(Command(Opcode.LOAD, buf=buf, addr=addr, rows=rows))
        for _ in range(rows):
            word = bytes(rng.randrange(256) for _ in range(c.rows if buf == Buf.ACT else c.cols))
            data.extend(word.ljust(c.bus_bytes, b"\0"))

    cmds.append(Command(Opcode.CONFIG, act=ActFn.CLAMP, multiplier=1 << 30, shift=-4, qmin=-128, qmax=127))
    load(Buf.WGT, 0, c.rows)
    cmds.append(Command(Opcode.PRELOAD, addr=0, krows=c.rows, ncols=c.cols))
    load(Buf.ACT, 0, 16)
    cmds.append(Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=16))
    for _ in range(steps):
        rows = rng.randint(2, 8)
        dst = rng.randrange(16, 40)                        # ACTIVATE writes act [dst, dst+rows)
        cmds.append(Command(Opcode.ACTIVATE, accaddr=rng.randrange(0, 16 - rows + 1), aaddr=dst, rows=rows, dest=0))
        lo = rng.choice([40, 41, 42, 43]) + rng.randrange(8)   # LOAD act elsewhere, any parity
        load(Buf.ACT, lo, rng.randint(1, 9))
        cmds.append(Command(Opcode.COMPUTE, aaddr=rng.randrange(16, 48), accaddr=rng.randrange(0, 8),
                            rows=rng.randint(1, 8), accumulate=rng.random() < 0.5))
    cmds.append(Command(Opcode.STORE, buf=Buf.ACT, addr=0, rows=c.act_depth))
    cmds.append(Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=16))
    return order_program(Program(cmds, bytes(data)), config)


@pytest.mark.parametrize("seed", range(4))
def test_concurrent_activation_sram_writes_match_golden(seed):
    config = NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=8, acc_depth=16)
    program = _random_program(config, random.Random(seed))
    golden = GoldenNpu(config).run(program)
    rtl = Npu(config, "pysim", backpressure=seed if seed % 2 else None).run(program)
    assert rtl.outputs == golden.outputs
    assert (rtl.error, rtl.rejected) == (golden.error, golden.rejected) and int(rtl.error) == 0
    stalls = rtl.counters["stall_cycles"]
    for name, value in golden.counters.items():
        assert rtl.counters[name] == value + (stalls if name in ("cycles", "stall_cycles") else 0), name


def test_dual_write_memory_streams():
    """Two sequential write streams starting at every parity, reads two cycles after each write."""
    depth = 64
    dut = DualWriteMemory(width=8, depth=depth)
    model = [0] * depth
    rng = random.Random(1)
    # Each cycle: per port, either nothing or the next word of its current burst.
    bursts = [[(a, rng.randint(1, 9)) for a in rng.sample(range(0, depth // 2 - 10), 6)],
              [(a, rng.randint(1, 9)) for a in rng.sample(range(depth // 2, depth - 10), 6)]]

    async def bench(ctx):
        pending = [[], []]
        for s in range(2):
            for start, n in bursts[s]:
                pending[s] += [start + i for i in range(n)] + [None] * rng.randint(1, 3)
        cycle, last_write = 0, {}
        while pending[0] or pending[1]:
            for s, wr in enumerate((dut.wr0, dut.wr1)):
                addr = pending[s].pop(0) if pending[s] else None
                ctx.set(wr.en, addr is not None)
                if addr is not None:
                    value = rng.randrange(256)
                    ctx.set(wr.addr, addr)
                    ctx.set(wr.data, value)
                    model[addr] = value
                    last_write[addr] = cycle
            # read a word written at least two cycles ago on port 0, any word on port 1
            ready = [a for a, t in last_write.items() if t <= cycle - 2]
            addr0 = rng.choice(ready) if ready else 0
            ctx.set(dut.rd0.addr, addr0)
            ctx.set(dut.rd0.en, 1)
            expect = model[addr0] if ready else None
            await ctx.tick()
            if expect is not None:
                assert ctx.get(dut.rd0.data) == expect, (cycle, addr0)
            cycle += 1
        ctx.set(dut.wr0.en, 0)
        ctx.set(dut.wr1.en, 0)
        await ctx.tick().repeat(2)
        for addr in range(depth):
            ctx.set(dut.rd1.addr, addr)
            await ctx.tick()
            assert ctx.get(dut.rd1.data) == model[addr], addr

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_replicated_memory_transparent_port():
    m = Module()
    m.submodules.mem = mem = ReplicatedMemory(width=8, depth=8, read_ports=2, transparent=(0,))

    async def bench(ctx):
        ctx.set(mem.wr.en, 1)
        ctx.set(mem.wr.addr, 3)
        ctx.set(mem.wr.data, 0x5A)
        for rd in (mem.rd0, mem.rd1):
            ctx.set(rd.addr, 3)
        await ctx.tick()
        assert ctx.get(mem.rd0.data) == 0x5A           # transparent: sees the same-cycle write
        assert ctx.get(mem.rd1.data) == 0              # not transparent: the old word

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_back_to_back_accumulation_into_the_same_rows(rows):
    """COMPUTEs of 1-3 rows accumulating into the same accumulator words back to back: the
    read-modify-write reads a word one cycle before (1 row), in the same cycle as (2 rows) or after
    (3 rows) the previous command's write of it (forwarding and port transparency)."""
    config = NpuConfig(rows=2, cols=2, act_depth=16, wgt_depth=8, acc_depth=8)
    rng = random.Random(rows)
    data = bytes(rng.randrange(256) for _ in range(2 * 2)) + bytes(rng.randrange(256) for _ in range(8 * 2))
    cmds = [Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=2),
            Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
            Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=8),
            Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=rows)]
    cmds += [Command(Opcode.COMPUTE, aaddr=i, accaddr=0, rows=rows, accumulate=1) for i in range(1, 6)]
    cmds += [Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=rows)]
    program = order_program(Program(cmds, data), config)
    golden = GoldenNpu(config).run(program)
    rtl = Npu(config, "pysim").run(program)
    assert rtl.outputs == golden.outputs and rtl.counters == golden.counters
