"""PL unit: PRELOAD, weight tile from the weight SRAM into the inactive PE weight buffer."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import Precision

from .common import read_port_signature, weight_lane

__all__ = ["PreloadUnit"]


class PreloadUnit(wiring.Component):
    """Clears PE buffer ``target`` and writes one PE row per cycle into it.

    PE rows written (``n``): int8 and a8w4 ``krows`` (a8w4 weight words hold two K rows of packed
    int4, so a word is read every other cycle); a4w4 ``ceil(krows / 2)`` (PE row r holds K rows 2r
    and 2r+1 as the low and high nibble of each weight byte, i.e. weight word r).

    Timing: ``start`` in cycle d; clear in d+1; PE row j written in d+2+j from the word read in the
    cycle before (or earlier, for the second row of an a8w4 word); ``busy`` high d+1 .. d+n+1.
    Columns ``>= ncols`` and K rows ``>= krows`` are zero.

    Members
    -------
    start, addr, krows, ncols, target : In
        Dispatch pulse, command fields and the PE buffer to fill.
    precision : In(2)
        The CONFIG precision (``golden.isa.Precision``), stable while busy.
    busy : Out(1)
    wgt_rd : weight SRAM read port.
    w_en, w_row, w_buf, w_data, w_clear, w_clear_buf : Out
        The systolic array's weight write interface.
    ev_wgt_read : Out(1)
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        super().__init__({
            "start": In(1), "addr": In(16), "krows": In(8), "ncols": In(8), "target": In(1),
            "precision": In(2), "busy": Out(1),
            "wgt_rd": In(read_port_signature(c.wgt_depth, 8 * c.wgt_word_bytes)),
            "w_en": Out(1), "w_row": Out(range(c.rows)), "w_buf": Out(1),
            "w_data": Out(data.ArrayLayout(signed(8), c.cols)), "w_clear": Out(1), "w_clear_buf": Out(1),
            "ev_wgt_read": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.d.comb += self.wgt_rd.en.eq(0)           # memory read ports default to enabled
        addr, krows, ncols, pe_rows = Signal(16), Signal(8), Signal(8), Signal(8)   # addr: the next word to read
        buf = Signal()
        step = Signal(9)             # 0 = clear; PE row (step - 1) is written
        m.d.comb += self.wgt_rd.addr.eq(addr)      # (from the register, read or not)
        a4w4 = self.precision == Precision.A4W4
        a8w4 = self.precision == Precision.A8W4

        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), addr.eq(self.addr), krows.eq(self.krows), ncols.eq(self.ncols),
                         buf.eq(self.target), step.eq(0),
                         pe_rows.eq(Mux(a4w4, (self.krows + 1) >> 1, self.krows))]
        with m.If(self.busy):
            m.d.sync += step.eq(step + 1)
            m.d.comb += [self.w_buf.eq(buf), self.w_clear_buf.eq(buf), self.w_clear.eq(step == 0)]
            read_now = Mux(a8w4, ~step[0] & (step < krows), step < pe_rows)
            with m.If(read_now):
                m.d.comb += [self.wgt_rd.en.eq(1), self.ev_wgt_read.eq(1)]
                m.d.sync += addr.eq(addr + 1)
            with m.If(step != 0):
                row = step - 1
                word = data.View(data.ArrayLayout(unsigned(8), c.cols), self.wgt_rd.data)
                second_k_row = (2 * row + 1) < krows          # a4w4, odd krows: last high nibble is 0
                m.d.comb += [self.w_en.eq(1), self.w_row.eq(row)]
                for col in range(c.cols):
                    value = weight_lane(word, col, a8w4=a8w4, a4w4=a4w4, high_row=row[0], high_pair=second_k_row)
                    m.d.comb += self.w_data[col].eq(Mux(col < ncols, value, 0))
            with m.If(step == pe_rows):
                m.d.sync += self.busy.eq(0)
        return m
