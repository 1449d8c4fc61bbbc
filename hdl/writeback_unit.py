"""ACT unit: ACTIVATE, accumulator rows through the fused activation unit to the activation SRAM or
the data-out stream."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.timing import ACT_LATENCY

from .common import read_port_signature, write_port_signature

__all__ = ["WritebackUnit"]


class WritebackUnit(wiring.Component):
    """Reads ``rows`` accumulator words, feeds the activation unit, writes or pushes its results.

    Timing: ``start`` in cycle d; accumulator row j read in d+1+j, presented to the activation unit
    in d+2+j, result written to activation SRAM word ``aaddr + j`` (``dest`` = 0; lanes beyond
    ``min(rows, cols)`` are zero) or pushed to data-out (``dest`` = 1) in d+2+j+P, P = activation
    unit latency (``golden.timing.ACT_LATENCY``). ``reading`` is high d+1 .. d+rows: the unit takes the
    next ACTIVATE from d+rows+1, while this one's rows are still in the activation unit (each row
    carries its destination, ``dest`` and the SRAM word, beside it); ``busy`` is high until the last
    row in flight is written or pushed (d+1 .. d+rows+P+1 for the last ACTIVATE). Both are registers,
    loaded from the unit's next state (the dispatcher reads them).

    Members
    -------
    start, accaddr, aaddr, rows, dest, bank, perchan : In
    reading, busy : Out(1)
    bias_bank : Out(1)
        The bias bank of the ACTIVATE whose rows are read (each row's bias and requantization
        parameters are selected by it as the row is read, and travel with the row: ``hdl/controller.py``).
    per_channel : Out(1)
        That ACTIVATE requantizes with its bank's per-channel parameters (``perchan``).
    acc_rd, act_wr : SRAM ports.
    i_valid, i_acc : Out; o_data : In
        The activation unit's row interface (a row presented in cycle t leaves in t+P).
    push, push_data : Out
        A data-out beat this cycle (the result row, zero-padded to the bus width).
    ev_acc_read, ev_act_op, ev_act_write : Out(1)
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        super().__init__({
            "start": In(1), "accaddr": In(16), "aaddr": In(16), "rows": In(16), "dest": In(1),
            "bank": In(1), "perchan": In(1), "reading": Out(1), "busy": Out(1), "bias_bank": Out(1),
            "per_channel": Out(1),
            "acc_rd": In(read_port_signature(c.acc_depth, 32 * c.cols)),
            "act_wr": In(write_port_signature(c.act_depth, 8 * c.act_word_bytes)),
            "i_valid": Out(1), "i_acc": Out(data.ArrayLayout(signed(32), c.cols)),
            "o_data": In(data.ArrayLayout(signed(8), c.cols)),
            "push": Out(1), "push_data": Out(8 * c.bus_bytes),
            "ev_acc_read": Out(1), "ev_act_op": Out(1), "ev_act_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.d.comb += self.acc_rd.en.eq(0)            # memory read ports default to enabled
        raddr, waddr, rows_left = Signal(16), Signal(16), Signal(17)
        dest = Signal()
        # ``reading`` is ``rows_left != 0`` and ``busy`` ``reading`` or a row in flight, each one cycle
        # ahead from the next state (a ``start`` comes only while not ``reading``; ``reading`` wins, as
        # its assignment to ``rows_left`` below does).
        reading_next = Mux(self.reading, rows_left != 1, self.start & (self.rows != 0))
        m.d.comb += self.acc_rd.addr.eq(raddr)
        with m.If(self.start):
            m.d.sync += [raddr.eq(self.accaddr), waddr.eq(self.aaddr), rows_left.eq(self.rows),
                         dest.eq(self.dest), self.bias_bank.eq(self.bank), self.per_channel.eq(self.perchan)]
        with m.If(self.reading):
            m.d.comb += [self.acc_rd.en.eq(1), self.ev_acc_read.eq(1)]
            m.d.sync += [raddr.eq(raddr + 1), waddr.eq(waddr + 1), rows_left.eq(rows_left - 1)]
        m.d.sync += self.i_valid.eq(self.reading)
        m.d.comb += self.i_acc.as_value().eq(self.acc_rd.data)

        # -- each row's destination travels beside the activation unit: stage 0 lines up with i_valid,
        # stage P with the row's result ------------------------------------------------------------
        # (``write``: valid and bound for the SRAM, decided at stage 0, so that the SRAM write enable is
        # a register.)
        tag_layout = data.StructLayout({"valid": 1, "dest": 1, "write": 1, "waddr": 16})
        tags = [Signal(tag_layout, name=f"tag_d{i}") for i in range(ACT_LATENCY + 1)]
        m.d.sync += [tags[0].valid.eq(self.reading), tags[0].dest.eq(dest), tags[0].write.eq(self.reading & ~dest),
                     tags[0].waddr.eq(waddr)]
        m.d.sync += [nxt.eq(prev) for prev, nxt in zip(tags, tags[1:])]
        m.d.sync += [self.reading.eq(reading_next),
                     self.busy.eq(reading_next | self.reading | Cat(tag.valid for tag in tags[:-1]).any())]
        out = tags[-1]
        m.d.comb += [self.act_wr.addr.eq(out.waddr),
                     self.act_wr.data.eq(self.o_data.as_value()[:8 * min(c.rows, c.cols)])]
        with m.If(out.valid):
            m.d.comb += self.ev_act_op.eq(1)
            with m.If(out.dest):
                m.d.comb += [self.push.eq(1), self.push_data.eq(self.o_data.as_value())]
        m.d.comb += [self.act_wr.en.eq(out.write), self.ev_act_write.eq(out.write)]
        return m
