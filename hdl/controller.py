"""The NPU core: the SRAMs, the compute engine, the activation unit, the LD / ACT / ST units and the
dispatcher, and the wiring between them.

The dispatcher (``hdl/dispatcher.py``) starts the head command (held by ``hdl/top.py``) on its unit
once the unit is free and the units its ``wait`` tokens name are idle; it compares no addresses.
PRELOAD and COMPUTE go to the compute engine of the configured dataflow (``hdl/engine.py``). The
timing of every unit is documented in its module and modelled in ``golden/timing.py``. The whole
core runs under one clock enable (``hdl/top.py`` freezes it on stream back-pressure), so the core
itself never sees a stall: its registers and every unit below run under their own registered copy of
it (``hdl/freeze.py``), all loaded with ``run_next``.
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import COMMAND_BITS, ActFn, Buf, LutTable, Opcode, Precision
from opennpu.golden.program import COUNTER_NAMES
from opennpu.golden.timing import ACT_LATENCY, array_latency

from .activation import ActivationUnit
from .array import SystolicArray
from .counters import Events, counter_readout_signature
from .decoder import command_layout
from .dispatcher import Dispatcher, HeadState
from .engine import DW_CONFIG, compute_engine
from .freeze import EnableCopies
from .load_unit import LoadKind, LoadUnit
from .sram import DualWriteMemory, ReplicatedMemory
from .store_unit import StoreMode, StoreUnit
from .writeback_unit import WritebackUnit

__all__ = ["Controller", "check_rtl_config"]


def check_rtl_config(config: NpuConfig):
    """Raise ``ValueError`` for configurations the RTL does not implement (call before elaborating)."""
    if config.dataflow not in ("ws", "os"):
        raise ValueError(f"the RTL implements the 'ws' and 'os' dataflows; got dataflow={config.dataflow!r}")


class Controller(wiring.Component):
    """Everything that the stream back-pressure freezes.

    Members
    -------
    head : In(HeadState)
        The dispatcher's head register, held by ``hdl/top.py`` because it must load while the core is
        frozen (a program waiting for its next command).
    cmd_word, cmd_codes, next_word, next_codes, next_head, consume
        The dispatcher's (``hdl/dispatcher.py``): the pre-head register's command is checked as it
        enters (``cmd_codes``, registered with it by ``hdl/top.py``), and ``next_head`` is what the
        head becomes if it loads; ``consume``: the head is dispatched or rejected this cycle.
    din : In(8 * bus_bytes); want_in, want_in_next : Out(1)
        Data-in beat; the LD unit consumes one this cycle / will want one in the next cycle if this
        cycle runs.
    push, push_data : Out
        A data-out beat this cycle.
    run_next : In(1)
        Whether the core advances in the next cycle: loaded into the enable copies of the units.
    counters : Out(counter_readout_signature(config))
        The ST unit's readout of the counters (``hdl/counters.py``, ``hdl/store_unit.py``).
    counter_sel : In(range(beats(8 * n)))
        The beat of the counters that ``counters.sel`` asks for while the ST unit does not stream.
    events : Out(Events)
    busy : Out(1)
        Some unit is executing.
    error : Out(3); rejected : Out(16)
        Sticky first error code and the number of rejected commands (saturates at 65535).
    """

    def __init__(self, config: NpuConfig):
        check_rtl_config(config)
        if SystolicArray.latency_for(config.rows, config.cols) != array_latency(config.rows, config.cols):
            raise AssertionError("hdl/array.py and golden/timing.py disagree on the array latency")
        if ActivationUnit.latency_for() != ACT_LATENCY:
            raise AssertionError("hdl/activation.py and golden/timing.py disagree on the activation latency")
        self._config = c = config
        self.engine = compute_engine(c)
        self.act_fn = ActivationUnit(c.cols, min(c.bus_bytes, 256))
        self.ld = LoadUnit(c)
        self.wb, self.st = WritebackUnit(c), StoreUnit(c)
        self.dispatcher = Dispatcher(c)
        codes = self.dispatcher.signature.members["cmd_codes"].shape
        super().__init__({
            "head": In(HeadState), "cmd_word": In(COMMAND_BITS), "cmd_codes": Out(codes),
            "next_word": In(COMMAND_BITS), "next_codes": In(codes),
            "next_head": Out(HeadState), "consume": Out(1),
            "din": In(8 * c.bus_bytes), "want_in": Out(1), "want_in_next": Out(1),
            "push": Out(1), "push_data": Out(8 * c.bus_bytes),
            "run_next": In(1), "counters": Out(counter_readout_signature(c)),
            "counter_sel": In(range(c.beats(8 * len(COUNTER_NAMES)))),
            "events": Out(Events), "busy": Out(1),
            "error": Out(3), "rejected": Out(16),
        })

    def elaborate(self, platform):
        m = Module()                     # the core's registers and wiring; the units run beside it
        c = self._config

        # -- storage and units --------------------------------------------------------------------
        # Block-RAM friendly SRAMs (hdl/sram.py): read-port copies, parity banks for the two act writers.
        units = {}
        units["act_sram"] = act = DualWriteMemory(width=8 * c.act_word_bytes, depth=c.act_depth, read_ports=3)
        units["wgt_sram"] = wgt = ReplicatedMemory(width=8 * c.wgt_word_bytes, depth=c.wgt_depth, read_ports=2)
        units["acc_sram"] = acc = ReplicatedMemory(width=32 * c.cols, depth=c.acc_depth, read_ports=3,
                                                   transparent=(0,))
        units["engine"] = engine = self.engine
        units["act_fn"] = act_fn = self.act_fn
        units["ld"] = ld = self.ld
        units["wb"] = wb = self.wb
        units["st"] = st = self.st
        units["dispatcher"] = disp = self.dispatcher

        wiring.connect(m, ld.act_wr, act.wr0)
        wiring.connect(m, wb.act_wr, act.wr1)
        wiring.connect(m, engine.act_rd, act.rd0)
        wiring.connect(m, st.act_rd, act.rd1)
        wiring.connect(m, wb.act_rd, act.rd2)
        wiring.connect(m, ld.wgt_wr, wgt.wr)
        wiring.connect(m, engine.wgt_rd, wgt.rd0)
        wiring.connect(m, st.wgt_rd, wgt.rd1)
        wiring.connect(m, engine.acc_wr, acc.wr)
        wiring.connect(m, engine.acc_rmw_rd, acc.rd0)
        wiring.connect(m, wb.acc_rd, acc.rd1)
        wiring.connect(m, st.acc_rd, acc.rd2)
        wiring.connect(m, st.counters, wiring.flipped(self.counters))

        busy = disp.busy
        m.d.comb += [
            busy.ld.eq(ld.busy), busy.pl.eq(engine.pl_busy), busy.pl_issue.eq(engine.pl_issue_busy),
            busy.ex_issue.eq(engine.issue_busy),
            busy.ex_drain.eq(engine.drain_busy), busy.ex_older.eq(engine.older_busy), busy.act.eq(wb.busy),
            busy.act_read.eq(wb.reading), busy.st.eq(st.busy),
            disp.ex_issue_ends.eq(engine.issue_ends), disp.pl_issue_ends.eq(engine.pl_issue_ends),
            disp.ld_issue_ends.eq(ld.issue_ends),
            self.busy.eq(busy.as_value().any()),
            act_fn.i_valid.eq(wb.i_valid), act_fn.i_acc.eq(wb.i_acc),
            wb.o_data.eq(act_fn.o_data),
            act_fn.lut_we.eq(ld.lut_we), act_fn.lut_addr.eq(ld.lut_addr),
            act_fn.lut_wdata.eq(ld.lut_wdata),
            wb.tab_we.eq(ld.tab_we), wb.tab_addr.eq(ld.tab_addr), wb.tab_wdata.eq(ld.tab_wdata),
            ld.din.eq(self.din), self.want_in.eq(ld.want), self.want_in_next.eq(ld.want_next),
            st.counter_sel.eq(self.counter_sel),
            self.push.eq(wb.push | st.push),
            self.push_data.eq(Mux(wb.push, wb.push_data, st.push_data)),
        ]

        # -- dispatcher ---------------------------------------------------------------------------
        m.d.comb += [
            disp.head.eq(self.head), disp.cmd_word.eq(self.cmd_word), self.cmd_codes.eq(disp.cmd_codes),
            disp.next_word.eq(self.next_word), disp.next_codes.eq(self.next_codes),
            self.next_head.eq(disp.next_head), self.consume.eq(disp.consume),
            self.error.eq(disp.error), self.rejected.eq(disp.rejected),
        ]
        precision, start = disp.precision, disp.start

        # -- CONFIG registers of the activation unit and of depthwise COMPUTEs ------------------------
        head_word = self.head.word
        v = {op: data.View(command_layout(op), head_word) for op in Opcode}
        use_lut, single_round = Signal(), Signal()
        out_zp, qmin, qmax = Signal(signed(8)), Signal(signed(8), init=-128), Signal(signed(8), init=127)
        shift, multiplier = Signal(signed(8)), Signal(31)
        dw_image = {name: Signal.like(getattr(engine, name), name=name) for name in DW_CONFIG}
        with m.If(start.config):
            f = v[Opcode.CONFIG]
            m.d.sync += [use_lut.eq(f.act == ActFn.LUT), single_round.eq(f.single_round), out_zp.eq(f.out_zp),
                         qmin.eq(f.qmin),
                         qmax.eq(f.qmax), shift.eq(f.shift), multiplier.eq(f.multiplier),
                         *(reg.eq(getattr(f, name)) for name, reg in dw_image.items())]
        m.d.comb += [getattr(engine, name).eq(reg) for name, reg in dw_image.items()]
        m.d.comb += [act_fn.use_lut.eq(use_lut), act_fn.single_round.eq(single_round), act_fn.out_zp.eq(out_zp),
                     act_fn.qmin.eq(qmin),
                     act_fn.qmax.eq(qmax)]
        # Per lane: the bias of the ACTIVATE's bank, and CONFIG's shift and multiplier or the bank's
        # per-channel ones (ACTIVATE perchan), selected into registers (no path from the ACT unit's state
        # through the bank muxes into the activation unit), so that they reach the activation unit with
        # each row: the ACT unit reads row j in cycle r (its bank and perchan registers hold its
        # ACTIVATE's from the start cycle on) and presents it in r+1, where these registers hold the
        # selection made in r. The activation unit carries them beside the row, so ACTIVATEs of other
        # banks follow each other back to back. CONFIG, LOAD_BIAS and LOAD_QUANT registers change at
        # least two cycles before a dependent ACTIVATE's first row.
        act_bias = Signal.like(act_fn.bias)
        act_shift, act_multiplier = Signal.like(act_fn.shift), Signal.like(act_fn.multiplier)
        # (An elementwise row brings its own bias, table Y's entries, from the ACT unit.)
        m.d.comb += [act_fn.bias.eq(Mux(wb.ew_valid, wb.ew_bias, act_bias)), act_fn.shift.eq(act_shift),
                     act_fn.multiplier.eq(act_multiplier)]
        m.d.sync += act_bias.eq(ld.bias[wb.bias_bank])
        for i in range(c.cols):
            m.d.sync += [
                act_shift[i].eq(Mux(wb.per_channel, ld.shift[wb.bias_bank][i], shift)),
                act_multiplier[i].eq(Mux(wb.per_channel, ld.multiplier[wb.bias_bank][i], multiplier)),
            ]

        # -- unit commands: start pulses from the dispatcher, fields straight from the head word ------
        opcode = head_word[:4]
        load, act_cmd, store = v[Opcode.LOAD], v[Opcode.ACTIVATE], v[Opcode.STORE]
        m.d.comb += [
            engine.start_pl.eq(start.pl), engine.start_ex.eq(start.ex), engine.word.eq(head_word),
            engine.precision.eq(precision),
            ld.start.eq(start.ld), ld.discard.eq(start.discard),
            ld.kind.eq(Mux(opcode == Opcode.LOAD, Mux(load.buf == Buf.WGT, LoadKind.WGT, LoadKind.ACT),
                           Mux(opcode == Opcode.LOAD_BIAS, LoadKind.BIAS,
                               Mux(opcode == Opcode.LOAD_QUANT, LoadKind.QUANT,
                                   # (LOAD's ``buf``: ``table`` and the reserved bit above it, as
                                   # ``golden.checks.data_in_beats`` reads them, for rejected words too)
                                   Mux(load.buf == LutTable.EW, LoadKind.TABLE, LoadKind.LUT))))),
            ld.addr.eq(load.addr), ld.rows.eq(load.rows), ld.bank.eq(v[Opcode.LOAD_BIAS].bank),     # (LOAD_QUANT: the same field)
            wb.start.eq(start.act),
            wb.accaddr.eq(act_cmd.accaddr), wb.aaddr.eq(act_cmd.aaddr), wb.rows.eq(act_cmd.rows),
            wb.dest.eq(act_cmd.dest), wb.bank.eq(act_cmd.bank), wb.perchan.eq(act_cmd.perchan),
            wb.ew.eq(act_cmd.ew), wb.xaddr.eq(act_cmd.xaddr), wb.yaddr.eq(act_cmd.yaddr),
            st.start.eq(start.st),
            st.mode.eq(Mux(opcode == Opcode.COUNTERS, StoreMode.COUNTERS, store.buf)),
            st.addr.eq(store.addr), st.rows.eq(store.rows),
        ]

        # -- counter events -----------------------------------------------------------------------
        ev, eng = self.events, engine.events
        m.d.comb += [
            ev.row.eq(eng.row), ev.macs.eq(eng.macs), ev.int4_macs.eq(precision == Precision.A4W4),
            ev.act_reads.eq(eng.act_read + st.ev_act_read + wb.ev_act_read), ev.act_writes.eq(ld.ev_act_write + wb.ev_act_write),
            ev.wgt_reads.eq(eng.wgt_read + st.ev_wgt_read), ev.wgt_writes.eq(ld.ev_wgt_write),
            ev.acc_reads.eq(eng.acc_read + wb.ev_acc_read + st.ev_acc_read), ev.acc_writes.eq(eng.acc_write),
            ev.beat_in.eq(ld.ev_beat), ev.beat_out.eq(self.push), ev.act_row.eq(wb.ev_act_op),
        ]

        core = Module()
        enables = EnableCopies(core, platform, self.run_next)
        enables.freeze("regs", m)         # (first: the units' ports keep their units' names in Verilog)
        for name, unit in units.items():
            enables.freeze(name, unit)
        return core
