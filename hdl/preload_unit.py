"""PL unit: PRELOAD, weight tile from the weight SRAM into the inactive PE weight buffer."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import Precision

from .common import read_port_signature, weight_lane

__all__ = ["PreloadUnit"]


class PreloadUnit(wiring.Component):
    """Writes every PE row of buffer ``target``, one per cycle: the tile's rows, then zeros.

    PE rows holding the tile (``n``): int8 and a8w4 ``krows`` (a8w4 weight words hold two K rows of
    packed int4, so a word is read every other cycle); a4w4 ``ceil(krows / 2)`` (PE row r holds K rows
    2r and 2r+1 as the low and high nibble of each weight byte, i.e. weight word r). PE rows ``>= n``,
    columns ``>= ncols`` and K rows ``>= krows`` are written as zero, so no clear is needed and the
    writes follow the array's wavefront (``hdl/array.py``).

    Timing (``golden/timing.py``): ``start`` in cycle d; step j (PE row j) in d+1+j, j < rows
    (``issue_busy``), reading the word of row j there (or earlier, for the second row of an a8w4
    word); the array write of PE row j is presented in d+2+j, from a register stage, so ``issue_ends``
    pulses in d+rows and the next PRELOAD may start in that cycle. PE(rows-1, cols-1) is written at
    the edge ending d+rows+cols: ``busy`` is high d+1 .. d+rows+cols.

    Members
    -------
    start, addr, krows, ncols, target : In
        Dispatch pulse, command fields and the PE buffer to fill.
    precision : In(2)
        The CONFIG precision (``golden.isa.Precision``), stable while busy.
    issue_busy, issue_ends, busy : Out(1)
    wgt_rd : weight SRAM read port.
    w_en, w_row, w_buf, w_data : Out
        The systolic array's weight write interface.
    ev_wgt_read : Out(1)
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        super().__init__({
            "start": In(1), "addr": In(16), "krows": In(8), "ncols": In(8), "target": In(1),
            "precision": In(2), "issue_busy": Out(1), "issue_ends": Out(1), "busy": Out(1),
            "wgt_rd": In(read_port_signature(c.wgt_depth, 8 * c.wgt_word_bytes)),
            "w_en": Out(1), "w_row": Out(range(c.rows)), "w_buf": Out(1),
            "w_data": Out(data.ArrayLayout(signed(8), c.cols)),
            "ev_wgt_read": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.d.comb += self.wgt_rd.en.eq(0)           # memory read ports default to enabled
        addr, krows, ncols, pe_rows = Signal(16), Signal(8), Signal(8), Signal(8)   # addr: the next word to read
        buf = Signal()
        step = Signal(range(c.rows))
        m.d.comb += self.wgt_rd.addr.eq(addr)      # (from the register, read or not)
        a4w4 = self.precision == Precision.A4W4
        a8w4 = self.precision == Precision.A8W4

        # -- step stage: one PE row a cycle, reading its word ------------------------------------------
        m.d.comb += self.issue_ends.eq(self.issue_busy & (step == c.rows - 1))
        with m.If(self.issue_busy):
            m.d.sync += step.eq(step + 1)
            read_now = Mux(a8w4, ~step[0] & (step < krows), step < pe_rows)
            with m.If(read_now):
                m.d.comb += [self.wgt_rd.en.eq(1), self.ev_wgt_read.eq(1)]
                m.d.sync += addr.eq(addr + 1)
            with m.If(self.issue_ends):
                m.d.sync += self.issue_busy.eq(0)
        with m.If(self.start):
            m.d.sync += [self.issue_busy.eq(1), addr.eq(self.addr), krows.eq(self.krows), ncols.eq(self.ncols),
                         buf.eq(self.target), step.eq(0),
                         pe_rows.eq(Mux(a4w4, (self.krows + 1) >> 1, self.krows))]

        # -- write stage: the row stepped a cycle ago (its own copy of the fields: the next PRELOAD
        #    may have started) ------------------------------------------------------------------------
        w = Signal(data.StructLayout({"valid": 1, "row": range(c.rows), "buf": 1, "zero": 1, "high_pair": 1,
                                      "ncols": 8}))
        m.d.sync += [w.valid.eq(self.issue_busy), w.row.eq(step), w.buf.eq(buf), w.zero.eq(step >= pe_rows),
                     w.high_pair.eq((2 * step + 1) < krows), w.ncols.eq(ncols)]
        word = data.View(data.ArrayLayout(unsigned(8), c.cols), self.wgt_rd.data)
        m.d.comb += [self.w_en.eq(w.valid), self.w_row.eq(w.row), self.w_buf.eq(w.buf)]
        for col in range(c.cols):
            value = weight_lane(word, col, a8w4=a8w4, a4w4=a4w4, high_row=w.row[0], high_pair=w.high_pair)
            m.d.comb += self.w_data[col].eq(Mux((col < w.ncols) & ~w.zero, value, 0))

        # -- busy until the last column of the last PE row is written --------------------------------
        drain_left = Signal(range(c.cols + 1))
        with m.If(self.issue_ends):
            m.d.sync += drain_left.eq(c.cols)
        with m.Elif(drain_left != 0):
            m.d.sync += drain_left.eq(drain_left - 1)
        m.d.comb += self.busy.eq(self.issue_busy | (drain_left != 0))
        return m
