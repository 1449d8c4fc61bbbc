"""PL unit: PRELOAD, weight tile from the weight SRAM into the inactive PE weight buffer."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig

from .common import read_port_signature

__all__ = ["PreloadUnit"]


class PreloadUnit(wiring.Component):
    """Clears PE buffer ``target`` and writes ``krows`` weight rows into it, one row per cycle.

    Timing: ``start`` in cycle d; clear and read of row 0 in d+1; row j read in d+1+j and written
    into PE row j in d+2+j; ``busy`` high d+1 .. d+krows+1. Columns ``>= ncols`` are written as zero,
    rows ``>= krows`` stay cleared.

    Members
    -------
    start, addr, krows, ncols, target : In
        Dispatch pulse, command fields and the PE buffer to fill.
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
            "busy": Out(1),
            "wgt_rd": In(read_port_signature(c.wgt_depth, 8 * c.wgt_word_bytes)),
            "w_en": Out(1), "w_row": Out(range(c.rows)), "w_buf": Out(1),
            "w_data": Out(data.ArrayLayout(signed(8), c.cols)), "w_clear": Out(1), "w_clear_buf": Out(1),
            "ev_wgt_read": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.d.comb += self.wgt_rd.en.eq(0)           # memory read ports default to enabled
        addr = Signal(16)
        krows = Signal(8)
        ncols = Signal(8)
        buf = Signal()
        step = Signal(9)             # 0 = clear + first read; row (step - 1) is written

        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), addr.eq(self.addr), krows.eq(self.krows), ncols.eq(self.ncols),
                         buf.eq(self.target), step.eq(0)]
        with m.If(self.busy):
            m.d.sync += step.eq(step + 1)
            m.d.comb += [self.w_buf.eq(buf), self.w_clear_buf.eq(buf), self.w_clear.eq(step == 0)]
            with m.If(step < krows):
                m.d.comb += [self.wgt_rd.en.eq(1), self.wgt_rd.addr.eq(addr + step), self.ev_wgt_read.eq(1)]
            with m.If(step != 0):
                row = data.View(data.ArrayLayout(signed(8), c.cols), self.wgt_rd.data)
                m.d.comb += [self.w_en.eq(1), self.w_row.eq(step - 1)]
                for col in range(c.cols):
                    m.d.comb += self.w_data[col].eq(Mux(col < ncols, row[col], 0))
            with m.If(step == krows):
                m.d.sync += self.busy.eq(0)
        return m
