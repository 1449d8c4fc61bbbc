"""``NpuTop``: the NPU with its host streams, the head register, the stream FIFOs and the stall logic.

Back-pressure policy: any stream the machine needs and cannot use *freezes the whole core* (one clock
enable, ``run``) for that cycle. ``run`` is a register: it is decided one cycle ahead from next-state
values (``run_next``), so that the enable of ~16k flip-flops starts at flip-flops instead of at the
end of the stream handshakes. Each unit of the core, the counters and this module's own logic load
their own copy of that register (``hdl/freeze.py``), so no single net reaches every flip-flop. The
core is frozen in cycle t+1 when, after cycle t:

- a program is open (its ``last`` command not yet received) and the head register will be empty;
- the LD unit will want a data-in beat and the 2-entry data-in FIFO will be empty;
- the 3-entry data-out FIFO holds two beats or more now (a beat pushed in t still fits; this rule
  does not wait for the host's ``ready``, which is not known a cycle ahead).

Frozen cycles are counted in ``stall_cycles``; because nothing else moves, every other counter and
the order of all events are exactly those of a run without back-pressure. After the program, cycles
spent only waiting for the host to take buffered data-out beats count as stalls too, except the one
right after the last push (the cycle the model counts for the output register). So
``cycles - stall_cycles`` is what the cycle model (``golden/timing.py``) predicts.
"""
from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import COMMAND_BITS
from opennpu.golden.program import COUNTER_NAMES

from .controller import Controller
from .dispatcher import HeadState
from .counters import Counters
from .freeze import EnableCopies

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
    counter_sel : In(range(beats(8 * len(COUNTER_NAMES)))); counter_beat : Out(8 * bus_bytes)
        Beat ``counter_sel`` of the counters in the COUNTERS data-out layout (``golden.program.COUNTER_NAMES``
        order, 8 bytes each, zero-extended from ``counter_bits``), combinational; exact while
        ``status.idle`` (the drivers and the host link's STATUS reply read the final counters so). While
        the ST unit streams, the beat it pushes.
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
            "counter_sel": In(range(config.beats(8 * len(COUNTER_NAMES)))), "counter_beat": Out(bus),
        })

    @property
    def config(self) -> NpuConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        core, perf = self.core, self.perf
        bus = 8 * self._config.bus_bytes
        # The clock enable of the whole core: registered copies of ``run_next`` (hdl/freeze.py), one
        # here, one for the counters, one per unit inside the core.
        run_next = Signal()
        enables = EnableCopies(m, platform, run_next)
        run = enables.copy("run")
        m.submodules.core = core
        m.submodules.perf = perf
        wiring.connect(m, core.counters, perf.readout)
        m.submodules.din_fifo = din_fifo = fifo.SyncFIFO(width=bus, depth=2)
        m.submodules.dout_fifo = dout_fifo = fifo.SyncFIFO(width=bus, depth=3)

        # The pre-head register: the command behind the core's head with its checker codes for every
        # configured precision and opcode (computed by the dispatcher as the command enters,
        # hdl/dispatcher.py).
        # A program is open from the cycle its first command sits in the head.
        # The head register (its code selected by the dispatcher the cycle before it loads) is kept
        # here, outside the clock enable: a program waiting for its next command is frozen and must
        # still load it.
        pre_valid, pre, head = Signal(), Signal(CommandBeat), Signal(HeadState)
        pre_codes = Signal.like(core.cmd_codes)
        program_open = Signal()

        consumed = core.consume & run
        take = Signal()
        pop_in = core.want_in & run
        push_out = core.push & run
        m.d.comb += [
            take.eq(pre_valid & (~head.valid | consumed)),
            core.head.eq(head), core.cmd_word.eq(self.cmd.payload.word),
            core.next_word.eq(pre.word), core.next_codes.eq(pre_codes),
            core.din.eq(din_fifo.r_data),
            core.counter_sel.eq(self.counter_sel), self.counter_beat.eq(perf.readout.beat),
            self.cmd.ready.eq((~pre_valid | take) & perf.ready),   # (counters cleared after reset)
            din_fifo.w_en.eq(self.din.valid), din_fifo.w_data.eq(self.din.payload),
            self.din.ready.eq(din_fifo.w_rdy), din_fifo.r_en.eq(pop_in),
            dout_fifo.w_en.eq(push_out), dout_fifo.w_data.eq(core.push_data),
            self.dout.valid.eq(dout_fifo.r_rdy), self.dout.payload.eq(dout_fifo.r_data),
            dout_fifo.r_en.eq(self.dout.ready),
        ]

        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [pre_valid.eq(1), pre.eq(self.cmd.payload), pre_codes.eq(core.cmd_codes)]
        with m.Elif(take):
            m.d.sync += pre_valid.eq(0)
        with m.If(take):
            m.d.sync += [head.eq(core.next_head), program_open.eq(~pre.last)]
        with m.Elif(run):
            m.d.sync += head.valid.eq(head.valid & ~core.consume)

        # -- the stall decision for the next cycle, from this cycle's next-state values ------------
        head_valid_next = pre_valid | (head.valid & ~consumed)
        program_open_next = Mux(take, ~pre.last, program_open)
        want_next = Mux(run, core.want_in_next, core.want_in)
        din_level_next = din_fifo.level + (din_fifo.w_en & din_fifo.w_rdy) - pop_in
        m.d.comb += [run_next.eq(~((program_open_next & ~head_valid_next)
                                   | (want_next & (din_level_next == 0))
                                   | (dout_fifo.level >= 2))),
                     core.run_next.eq(run_next)]

        # -- activity and stall accounting ---------------------------------------------------------
        core_active = Signal()
        active, pushed_before = Signal(), Signal()
        m.d.sync += pushed_before.eq(push_out)
        m.d.comb += [
            core_active.eq(head.valid | program_open | core.busy),
            active.eq(core_active | dout_fifo.r_rdy),
            perf.run.eq(enables.copy("run_perf")), perf.active.eq(active),
            perf.stall.eq(active & Mux(core_active, ~run, ~pushed_before)),
            perf.events.eq(core.events),
            self.status.error.eq(core.error), self.status.rejected.eq(core.rejected),
            self.status.idle.eq(~active & ~pre_valid & perf.settled),
        ]
        return m
