"""EX unit of the output-stationary NPU: COMPUTE streams K steps through the array, then drains the tile."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import Precision

from .common import read_port_signature, weight_lane, write_port_signature
from .os_array import OsStep

__all__ = ["OsExecuteUnit"]


class _DrainTag(data.Struct):
    """One output row on its way to the accumulator SRAM."""
    valid: 1
    accumulate: 1
    accaddr: 16
    row: 8


class OsExecuteUnit(wiring.Component):
    """Streams one K step per cycle into an :class:`~opennpu.hdl.os_array.OutputStationaryArray` and
    writes the finished output tile to the accumulator SRAM.

    Timing (``golden/timing.py``, ``CycleModel.compute_os``): ``start`` in cycle d; the issue phase
    lasts ``P = max(rows, cols - 1)`` cycles, d+1 .. d+P = e: first ``P - rows`` idle cycles, then step j
    reads activation word ``aaddr + j`` and its weight word (int8 / a4w4: ``waddr + j``; a8w4:
    ``waddr + j/2`` on even j, the odd step reuses the word) and enters the array one cycle later. The
    idle cycles make sure a short tile cannot overwrite the PE result registers of the previous tile
    before they are drained. In the first cycle m >= e with the drain slot empty, ``move`` pulses (a
    new COMPUTE may start in m+1); output row i (< ``mrows``) is written in cycle m+cols+3+i
    (overwrite, or read-modify-write when ``accumulate``: old word read two cycles earlier), and the
    drain slot is busy m+1 .. m+cols+mrows+2.

    Members
    -------
    start, aaddr, waddr, accaddr, rows, mrows, ncols, accumulate : In
        Dispatch pulse and the COMPUTE fields.
    precision : In(2)
        The CONFIG precision, stable while busy.
    issue_busy, drain_busy, move : Out(1)
    act_rd, wgt_rd, acc_rmw_rd, acc_wr : SRAM ports.
    a_valid, a_first, a_last, a_data, w_data : Out; drain_row : Out; drain_data : In
        The array's step and drain interface.
    ev_row, ev_wgt_read, ev_acc_read, ev_acc_write : Out(1); macs : Out(16)
        Counter events of this cycle (``macs``: MACs of one step, valid with ``ev_row``).
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        super().__init__({
            "start": In(1), "aaddr": In(16), "waddr": In(16), "accaddr": In(16), "rows": In(16),
            "mrows": In(8), "ncols": In(8), "accumulate": In(1), "precision": In(2),
            "issue_busy": Out(1), "drain_busy": Out(1), "move": Out(1),
            "act_rd": In(read_port_signature(c.act_depth, 8 * c.act_word_bytes)),
            "wgt_rd": In(read_port_signature(c.wgt_depth, 8 * c.wgt_word_bytes)),
            "acc_rmw_rd": In(read_port_signature(c.acc_depth, 32 * c.cols)),
            "acc_wr": In(write_port_signature(c.acc_depth, 32 * c.cols)),
            "a_valid": Out(1), "a_first": Out(1), "a_last": Out(1),
            "a_data": Out(data.ArrayLayout(signed(8), c.rows)), "w_data": Out(data.ArrayLayout(signed(8), c.cols)),
            "drain_row": Out(range(c.rows)), "drain_data": In(data.ArrayLayout(signed(32), c.cols)),
            "ev_row": Out(1), "ev_wgt_read": Out(1), "ev_acc_read": Out(1), "ev_acc_write": Out(1),
            "macs": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.d.comb += [self.act_rd.en.eq(0), self.wgt_rd.en.eq(0)]   # read ports default to enabled
        a8w4, a4w4 = self.precision == Precision.A8W4, self.precision == Precision.A4W4

        # -- issue slot -------------------------------------------------------------------------
        aaddr, waddr, accaddr = Signal(16), Signal(16), Signal(16)
        step, steps, idle_left = Signal(16), Signal(16), Signal(range(c.cols))
        mrows, ncols, accumulate = Signal(8), Signal(8), Signal()
        issuing = Signal()
        m.d.comb += [issuing.eq(self.issue_busy & (idle_left == 0) & (step != steps)),
                     self.move.eq(self.issue_busy & (idle_left == 0) & (step + 1 >= steps) & ~self.drain_busy),
                     self.ev_row.eq(issuing)]
        with m.If(self.start):
            m.d.sync += [self.issue_busy.eq(1), aaddr.eq(self.aaddr), waddr.eq(self.waddr),
                         accaddr.eq(self.accaddr), steps.eq(self.rows), step.eq(0),
                         idle_left.eq(Mux(self.rows < c.cols - 1, c.cols - 1 - self.rows, 0)),
                         mrows.eq(self.mrows), ncols.eq(self.ncols), accumulate.eq(self.accumulate),
                         self.macs.eq(self.mrows * self.ncols * Mux(a4w4, 2, 1))]
        with m.If(self.issue_busy & (idle_left != 0)):
            m.d.sync += idle_left.eq(idle_left - 1)
        read_weight = issuing & ~(a8w4 & step[0])
        with m.If(issuing):
            m.d.comb += [self.act_rd.en.eq(1), self.act_rd.addr.eq(aaddr + step),
                         self.wgt_rd.en.eq(read_weight), self.ev_wgt_read.eq(read_weight),
                         self.wgt_rd.addr.eq(waddr + Mux(a8w4, step >> 1, step))]
            m.d.sync += step.eq(step + 1)

        # -- the step enters the array with its SRAM data, one cycle after the read ---------------
        tag, odd = Signal(OsStep), Signal()
        m.d.sync += [tag.valid.eq(issuing), tag.first.eq(step == 0), tag.last.eq(step + 1 == steps),
                     odd.eq(step[0])]
        word = data.View(data.ArrayLayout(unsigned(8), c.cols), self.wgt_rd.data)
        m.d.comb += [self.a_valid.eq(tag.valid), self.a_first.eq(tag.first), self.a_last.eq(tag.last),
                     self.a_data.as_value().eq(self.act_rd.data)]
        for col in range(c.cols):
            value = weight_lane(word, col, a8w4=a8w4, a4w4=a4w4, high_row=odd, high_pair=1)
            m.d.comb += self.w_data[col].eq(Mux(col < ncols, value, 0))

        # -- drain slot: emit output row j in m+1+j; it is written cols+2 cycles later -------------
        drain_left = Signal(range(c.cols + c.rows + 4))
        emit_left, emit_row, emit_addr, emit_acc = Signal(8), Signal(8), Signal(16), Signal()
        with m.If(self.move):
            m.d.sync += [self.issue_busy.eq(0), self.drain_busy.eq(1), drain_left.eq(c.cols + mrows + 2),
                         emit_left.eq(mrows), emit_row.eq(0), emit_addr.eq(accaddr), emit_acc.eq(accumulate)]
        with m.Elif(self.drain_busy):
            m.d.sync += drain_left.eq(drain_left - 1)
            with m.If(drain_left == 1):
                m.d.sync += self.drain_busy.eq(0)
        with m.If(emit_left != 0):                  # the drain slot is busy, so no ``move`` here
            m.d.sync += [emit_left.eq(emit_left - 1), emit_row.eq(emit_row + 1), emit_addr.eq(emit_addr + 1)]
        emit = Signal(_DrainTag)
        m.d.comb += [emit.valid.eq(emit_left != 0), emit.row.eq(emit_row), emit.accaddr.eq(emit_addr),
                     emit.accumulate.eq(emit_acc)]
        stages = [emit]
        for i in range(c.cols + 2):
            nxt = Signal(_DrainTag, name=f"drain_d{i + 1}")
            m.d.sync += nxt.eq(stages[-1])
            stages.append(nxt)
        # Read-modify-write as in the WS EX unit: old word read two cycles before the write.
        rmw, done = stages[-3], stages[-1]
        m.d.comb += [self.acc_rmw_rd.en.eq(rmw.valid & rmw.accumulate), self.acc_rmw_rd.addr.eq(rmw.accaddr),
                     self.ev_acc_read.eq(rmw.valid & rmw.accumulate)]
        old_q = Signal(32 * c.cols)
        m.d.sync += old_q.eq(self.acc_rmw_rd.data)
        old = data.View(data.ArrayLayout(signed(32), c.cols), old_q)
        new = data.View(data.ArrayLayout(signed(32), c.cols), self.acc_wr.data)
        m.d.comb += [self.drain_row.eq(done.row), self.acc_wr.en.eq(done.valid), self.acc_wr.addr.eq(done.accaddr),
                     self.ev_acc_write.eq(done.valid)]
        for col in range(c.cols):
            m.d.comb += new[col].eq(self.drain_data[col] + Mux(done.accumulate, old[col], 0))
        return m
