"""ACT unit: ACTIVATE, accumulator rows through the fused activation unit to the activation SRAM or
the data-out stream."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig

from .common import read_port_signature, write_port_signature

__all__ = ["WritebackUnit"]


class WritebackUnit(wiring.Component):
    """Reads ``rows`` accumulator words, feeds the activation unit, writes or pushes its results.

    Timing: ``start`` in cycle d; accumulator row j read in d+1+j, presented to the activation unit
    in d+2+j, result written to activation SRAM word ``aaddr + j`` (``dest`` = 0; lanes beyond
    ``min(rows, cols)`` are zero) or pushed to data-out (``dest`` = 1) in d+2+j+P, P = activation
    unit latency; ``busy`` high d+1 .. d+rows+P+1.

    Members
    -------
    start, accaddr, aaddr, rows, dest, bank, perchan : In
    busy : Out(1)
    bias_bank : Out(1)
        The bias bank of the ACTIVATE in flight (selects the activation unit's bias).
    per_channel : Out(1)
        The ACTIVATE in flight requantizes with its bank's per-channel parameters (``perchan``).
    acc_rd, act_wr : SRAM ports.
    i_valid, i_acc : Out; o_valid, o_data : In
        The activation unit's row interface.
    push, push_data : Out
        A data-out beat this cycle (the result row, zero-padded to the bus width).
    ev_acc_read, ev_act_op, ev_act_write : Out(1)
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        super().__init__({
            "start": In(1), "accaddr": In(16), "aaddr": In(16), "rows": In(16), "dest": In(1),
            "bank": In(1), "perchan": In(1), "busy": Out(1), "bias_bank": Out(1), "per_channel": Out(1),
            "acc_rd": In(read_port_signature(c.acc_depth, 32 * c.cols)),
            "act_wr": In(write_port_signature(c.act_depth, 8 * c.act_word_bytes)),
            "i_valid": Out(1), "i_acc": Out(data.ArrayLayout(signed(32), c.cols)),
            "o_valid": In(1), "o_data": In(data.ArrayLayout(signed(8), c.cols)),
            "push": Out(1), "push_data": Out(8 * c.bus_bytes),
            "ev_acc_read": Out(1), "ev_act_op": Out(1), "ev_act_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.d.comb += self.acc_rd.en.eq(0)            # memory read ports default to enabled
        raddr, waddr, rows_left, outs_left = Signal(16), Signal(16), Signal(17), Signal(17)
        # SRAM addresses and write data straight from registers; only the enables depend on the state.
        m.d.comb += [self.acc_rd.addr.eq(raddr), self.act_wr.addr.eq(waddr),
                     self.act_wr.data.eq(self.o_data.as_value()[:8 * min(c.rows, c.cols)])]
        dest = Signal()

        reading = Signal()
        m.d.comb += reading.eq(self.busy & (rows_left != 0))
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), raddr.eq(self.accaddr), waddr.eq(self.aaddr),
                         rows_left.eq(self.rows), outs_left.eq(self.rows), dest.eq(self.dest),
                         self.bias_bank.eq(self.bank), self.per_channel.eq(self.perchan)]
        with m.If(reading):
            m.d.comb += [self.acc_rd.en.eq(1), self.ev_acc_read.eq(1)]
            m.d.sync += [raddr.eq(raddr + 1), rows_left.eq(rows_left - 1)]
        m.d.sync += self.i_valid.eq(reading)
        m.d.comb += self.i_acc.as_value().eq(self.acc_rd.data)

        with m.If(self.o_valid):
            m.d.comb += self.ev_act_op.eq(1)
            m.d.sync += outs_left.eq(outs_left - 1)
            with m.If(outs_left == 1):
                m.d.sync += self.busy.eq(0)
            with m.If(dest):
                m.d.comb += [self.push.eq(1), self.push_data.eq(self.o_data.as_value())]
            with m.Else():
                m.d.comb += [self.act_wr.en.eq(1), self.ev_act_write.eq(1)]
                m.d.sync += waddr.eq(waddr + 1)
        return m
