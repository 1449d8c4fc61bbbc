"""The compute engines: weight-stationary (PL + EX units around ``SystolicArray``) and output-stationary
(EX unit around ``OutputStationaryArray``), behind one interface so the core wires either the same way.

Interface (``engine_signature``)
--------------------------------
start_pl, start_ex : In(1)
    The dispatcher starts the head PRELOAD / COMPUTE (``hdl/dispatcher.py``); ``word`` holds it.
word : In(COMMAND_BITS)
    The head command word (fields sampled on a start pulse).
precision : In(2)
    The CONFIG precision (``golden.isa.Precision``), stable while the engine is busy.
dw_width, dw_period, dw_height, dw_pad, dw_stride2 : In
    The CONFIG image of depthwise COMPUTEs (``golden/isa.py``), stable while the engine is busy (the
    output-stationary engine has none: its checker rejects ``dw``).
pl_busy, pl_issue_busy, pl_issue_ends : Out(1)
    PL holds a PRELOAD (until its last PE weight is written); PL steps through one (its issue slot)
    and frees that slot at the end of this cycle, so a PRELOAD may start in it (all 0 in the
    output-stationary engine, which has no PRELOAD).
issue_busy, drain_busy, older_busy : Out(1)
    EX's issue slot; EX
    drains a COMPUTE; EX drains one besides the last one moved (``older_busy``: always 0 in the
    output-stationary engine, whose single drain slot holds one).
issue_ends : Out(1)
    EX's issue slot frees at the end of this cycle and a COMPUTE may start in it (weight-stationary:
    its ``move``; always 0 in the output-stationary engine, whose next COMPUTE starts a cycle later).
act_rd, wgt_rd, acc_rmw_rd, acc_wr : SRAM ports
    Activation read, weight read, accumulator read-modify-write read and write.
events : Out(EngineEvents)
    This cycle's counter events.

Timing: ``hdl/preload_unit.py``, ``hdl/execute_unit.py``, ``hdl/os_execute_unit.py`` and
``golden/timing.py``.
"""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import COMMAND_BITS, Opcode, Precision

from .array import SystolicArray
from .common import read_port_signature, write_port_signature
from .decoder import command_layout
from .execute_unit import DW_CONFIG, ExecuteUnit
from .os_array import OutputStationaryArray
from .os_execute_unit import OsExecuteUnit
from .preload_unit import PreloadUnit

__all__ = ["EngineEvents", "DW_CONFIG", "engine_signature", "array_for", "WsEngine", "OsEngine", "compute_engine"]


class EngineEvents(data.Struct):
    """What the engine did this cycle (``macs`` valid with ``row``)."""
    row: 1            # a row / K step entered the array (a busy cycle)
    macs: 16          # its useful MACs
    act_read: 1
    wgt_read: 1
    acc_read: 1
    acc_write: 1


def engine_signature(config: NpuConfig) -> wiring.Signature:
    c = config
    conf = command_layout(Opcode.CONFIG)
    return wiring.Signature({
        "start_pl": In(1), "start_ex": In(1), "word": In(COMMAND_BITS), "precision": In(2),
        **{name: In(conf[name].shape) for name in DW_CONFIG},
        "pl_busy": Out(1), "pl_issue_busy": Out(1), "pl_issue_ends": Out(1), "issue_busy": Out(1), "drain_busy": Out(1), "older_busy": Out(1),
        "issue_ends": Out(1),
        "act_rd": In(read_port_signature(c.act_depth, 8 * c.act_word_bytes)),
        "wgt_rd": In(read_port_signature(c.wgt_depth, 8 * c.wgt_word_bytes)),
        "acc_rmw_rd": In(read_port_signature(c.acc_depth, 32 * c.cols)),
        "acc_wr": In(write_port_signature(c.acc_depth, 32 * c.cols)),
        "events": Out(EngineEvents),
    })


def array_for(config: NpuConfig):
    """The PE array the configuration's dataflow uses (with INT4 pairs when it accepts a4w4)."""
    cls = OutputStationaryArray if config.dataflow == "os" else SystolicArray
    return cls(config.rows, config.cols, int4_pairs="a4w4" in config.precisions)


class WsEngine(wiring.Component):
    """Weight-stationary: PRELOAD fills the inactive PE weight buffer, COMPUTE streams rows through the
    current one. The engine keeps which buffer is current and the useful MACs per row of each."""

    def __init__(self, config: NpuConfig):
        self._config = config
        self.array, self.pl, self.ex = array_for(config), PreloadUnit(config), ExecuteUnit(config)
        super().__init__(engine_signature(config))

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self.array
        m.submodules.pl = pl = self.pl
        m.submodules.ex = ex = self.ex
        for port in ("act_rd", "acc_rmw_rd", "acc_wr"):
            wiring.connect(m, getattr(ex, port), wiring.flipped(getattr(self, port)))
        wiring.connect(m, pl.wgt_rd, wiring.flipped(self.wgt_rd))
        m.d.comb += [
            array.a_valid.eq(ex.a_valid), array.a_data.eq(ex.a_data), array.a_buf.eq(ex.a_buf),
            array.a_dw.eq(ex.a_dw),
            ex.out_valid.eq(array.out_valid), ex.out_data.eq(array.out_data),
            array.w_en.eq(pl.w_en), array.w_row.eq(pl.w_row), array.w_buf.eq(pl.w_buf),
            array.w_data.eq(pl.w_data),
            array.int4_pairs.eq(self.precision == Precision.A4W4), pl.precision.eq(self.precision),
        ]

        # PE weight buffers: COMPUTE uses ``cur``; PRELOAD fills ``~cur`` and then makes it current.
        pre = data.View(command_layout(Opcode.PRELOAD), self.word)
        comp = data.View(command_layout(Opcode.COMPUTE), self.word)
        cur = Signal()
        pe_macs = Array(Signal(16, name=f"pe_macs{i}") for i in range(2))
        with m.If(self.start_pl):
            m.d.sync += [cur.eq(~cur), pe_macs[~cur].eq(pre.krows * pre.ncols)]
        m.d.comb += [
            pl.start.eq(self.start_pl), pl.target.eq(~cur),
            pl.addr.eq(pre.addr), pl.krows.eq(pre.krows), pl.ncols.eq(pre.ncols),
            ex.start.eq(self.start_ex), ex.aaddr.eq(comp.aaddr), ex.astep.eq(comp.astep),
            ex.accaddr.eq(comp.accaddr),
            ex.rows.eq(comp.rows), ex.accumulate.eq(comp.accumulate), ex.buf.eq(cur), ex.row_macs.eq(pe_macs[cur]),
            ex.dw.eq(comp.dw), ex.drow.eq(comp.drow), ex.dcol.eq(comp.dcol),
            *(getattr(ex, name).eq(getattr(self, name)) for name in DW_CONFIG),
            self.pl_busy.eq(pl.busy), self.pl_issue_busy.eq(pl.issue_busy), self.pl_issue_ends.eq(pl.issue_ends),
            self.issue_busy.eq(ex.issue_busy), self.drain_busy.eq(ex.drain_busy),
            self.older_busy.eq(ex.older_busy), self.issue_ends.eq(ex.move),
            self.events.row.eq(ex.ev_row), self.events.macs.eq(ex.macs), self.events.act_read.eq(ex.ev_act_read),
            self.events.wgt_read.eq(pl.ev_wgt_read), self.events.acc_read.eq(ex.ev_acc_read),
            self.events.acc_write.eq(ex.ev_acc_write),
        ]
        return m


class OsEngine(wiring.Component):
    """Output-stationary: COMPUTE streams activations and weights through the array together (no PRELOAD:
    the checker rejects it, and ``start_pl`` is never raised)."""

    def __init__(self, config: NpuConfig):
        self._config = config
        self.array, self.pl, self.ex = array_for(config), None, OsExecuteUnit(config)
        super().__init__(engine_signature(config))

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self.array
        m.submodules.ex = ex = self.ex
        for port in ("act_rd", "wgt_rd", "acc_rmw_rd", "acc_wr"):
            wiring.connect(m, getattr(ex, port), wiring.flipped(getattr(self, port)))
        comp = data.View(command_layout(Opcode.COMPUTE), self.word)
        m.d.comb += [
            array.a_valid.eq(ex.a_valid), array.a_first.eq(ex.a_first), array.a_last.eq(ex.a_last),
            array.a_data.eq(ex.a_data), array.w_data.eq(ex.w_data),
            array.drain_row.eq(ex.drain_row), ex.drain_data.eq(array.drain_data),
            array.int4_pairs.eq(self.precision == Precision.A4W4), ex.precision.eq(self.precision),
            ex.start.eq(self.start_ex), ex.aaddr.eq(comp.aaddr), ex.waddr.eq(comp.waddr),
            ex.accaddr.eq(comp.accaddr), ex.rows.eq(comp.rows), ex.mrows.eq(comp.mrows),
            ex.ncols.eq(comp.ncols), ex.accumulate.eq(comp.accumulate),
            self.issue_busy.eq(ex.issue_busy), self.drain_busy.eq(ex.drain_busy),
            self.events.row.eq(ex.ev_row), self.events.macs.eq(ex.macs), self.events.act_read.eq(ex.ev_row),
            self.events.wgt_read.eq(ex.ev_wgt_read), self.events.acc_read.eq(ex.ev_acc_read),
            self.events.acc_write.eq(ex.ev_acc_write),
        ]
        return m


def compute_engine(config: NpuConfig):
    """The engine of the configuration's dataflow."""
    return (OsEngine if config.dataflow == "os" else WsEngine)(config)
