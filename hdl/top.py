"""``NpuTop``: the NPU with its host streams, the head register, the output register and the stall logic.

Back-pressure policy: any stream the machine needs and cannot use this cycle *freezes the whole core*
(one clock enable, ``run``) for that cycle. That happens when the LD unit needs a data-in beat that
is not valid, when the output register is full and the host is not ready, or when a program is open
(its ``last`` command not yet received) and the head register is empty. Frozen cycles are counted
in ``stall_cycles``; because nothing else moves, every other counter and the order of all events are
exactly those of a run without back-pressure, and ``cycles - stall_cycles`` is what the cycle model
(``golden/timing.py``) predicts.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import COMMAND_BITS
from opennpu.golden.program import COUNTER_NAMES

from .controller import Controller, HeadState
from .counters import Counters
from .fanout import BufferedEnableInserter

__all__ = ["CommandBeat", "Status", "NpuTop"]


class CommandBeat(data.Struct):
    """One command; ``last`` marks the final command of a program."""
    word: COMMAND_BITS
    last: 1


class Status(data.Struct):
    error: 3          # golden.isa.ErrorCode, sticky (first error since reset)
    rejected: 16      # number of rejected commands (saturating)
    idle: 1           # no program open, nothing executing, output register empty


class NpuTop(wiring.Component):
    """The whole NPU behind three valid/ready streams.

    Members
    -------
    cmd : In(stream.Signature(CommandBeat))
        Commands (``golden/isa.py`` encoding).
    din : In(stream.Signature(8 * bus_bytes))
        Data for LOAD / LOAD_BIAS / LOAD_LUT, one beat per cycle.
    dout : Out(stream.Signature(8 * bus_bytes))
        STORE / ACTIVATE-to-host / COUNTERS output. Once valid, payload and valid hold until taken.
    status : Out(Status)
    counters : Out(ArrayLayout(unsigned(64), len(COUNTER_NAMES)))
        Live counters (``golden.program.COUNTER_NAMES`` order).
    """

    def __init__(self, config: NpuConfig):
        self._config = config
        self.core = Controller(config)
        self.perf = Counters(config)
        bus = 8 * config.bus_bytes
        super().__init__({
            "cmd": In(stream.Signature(CommandBeat)),
            "din": In(stream.Signature(bus)),
            "dout": Out(stream.Signature(bus)),
            "status": Out(Status),
            "counters": Out(data.ArrayLayout(unsigned(64), len(COUNTER_NAMES))),
        })

    @property
    def config(self) -> NpuConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        core, perf = self.core, self.perf
        run = Signal()
        # The clock enable of the whole core, fanned out through LUT buffers (hdl/fanout.py).
        m.submodules.core = BufferedEnableInserter(run, platform)(core)
        m.submodules.perf = perf

        # The pre-head register: the command behind the core's head, decoded by the core while it waits
        # (hdl/controller.py). A program is open from the cycle its first command sits in the head.
        # The head register (decoded by the core the cycle before it loads) is kept here, outside the
        # clock enable: a program waiting for its next command is frozen and must still load it.
        pre_valid, pre, head = Signal(), Signal(CommandBeat), Signal(HeadState)
        program_open = Signal()
        out_valid, out_data = Signal(), Signal(8 * self._config.bus_bytes)

        s_cmd = program_open & ~head.valid
        s_in = core.want_in & ~self.din.valid
        s_out = out_valid & ~self.dout.ready
        take = Signal()
        m.d.comb += [
            run.eq(~(s_cmd | s_in | s_out)),
            take.eq(pre_valid & (~head.valid | (core.consume & run))),
            core.head.eq(head), core.next_word.eq(pre.word), core.running.eq(run),
            core.din.eq(self.din.payload), core.counters.eq(perf.values),
            self.din.ready.eq(core.want_in & ~s_out & ~s_cmd),
            self.cmd.ready.eq(~pre_valid | take),
            self.dout.valid.eq(out_valid), self.dout.payload.eq(out_data),
        ]

        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [pre_valid.eq(1), pre.eq(self.cmd.payload)]
        with m.Elif(take):
            m.d.sync += pre_valid.eq(0)
        with m.If(take):
            m.d.sync += [head.eq(core.next_head), program_open.eq(~pre.last)]
        with m.Elif(run):
            m.d.sync += [head.valid.eq(head.valid & ~core.consume), head.hits.eq(core.kept_hits)]

        with m.If(self.dout.valid & self.dout.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(core.push & run):
            m.d.sync += [out_valid.eq(1), out_data.eq(core.push_data)]

        active = Signal()
        m.d.comb += [
            active.eq(head.valid | program_open | core.busy | out_valid),
            perf.run.eq(run), perf.active.eq(active), perf.events.eq(core.events),
            self.counters.eq(perf.values),
            self.status.error.eq(core.error), self.status.rejected.eq(core.rejected),
            self.status.idle.eq(~active & ~pre_valid),
        ]
        return m
