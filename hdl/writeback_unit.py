"""ACT unit: ACTIVATE, accumulator rows (or, elementwise, two activation words through the elementwise
tables) through the fused activation unit to the activation SRAM or the data-out stream."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.timing import ACT_LATENCY

from .common import read_port_signature, write_port_signature
from .load_unit import TABLE_BYTES, table_word_bytes
from .sram import ReplicatedMemory

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

    Elementwise (``ew``): row j reads activation words ``xaddr + j`` in d+1+2j and ``yaddr + j`` in
    d+2+2j; lane i looks its value up in table X (in d+2+2j) and Y (d+3+2j) and presents ``X[x + 128]``
    on ``i_acc`` and ``Y[y + 128]`` on ``ew_bias`` (``ew_valid`` high) in d+4+2j; written or pushed in
    d+4+2j+P. ``reading`` is high d+1 .. d+2M, ``busy`` until d+2M+P+2. The tables (512 int32 entries,
    one block-RAM copy per lane) are written through ``tab_*`` by ``LOAD_LUT table=1``.

    Members
    -------
    start, accaddr, aaddr, rows, dest, bank, perchan, ew, xaddr, yaddr : In
    reading, busy : Out(1)
    bias_bank : Out(1)
        The bias bank of the ACTIVATE whose rows are read (each row's bias and requantization
        parameters are selected by it as the row is read, and travel with the row: ``hdl/controller.py``).
    per_channel : Out(1)
        That ACTIVATE requantizes with its bank's per-channel parameters (``perchan``).
    acc_rd, act_rd, act_wr : SRAM ports.
    tab_we, tab_addr, tab_wdata : In
        Elementwise-table write (``hdl/load_unit.py``).
    i_valid, i_acc : Out; o_data : In
        The activation unit's row interface (a row presented in cycle t leaves in t+P).
    push, push_data : Out
        A data-out beat this cycle (the result row, zero-padded to the bus width).
    ew_valid : Out(1); ew_bias : Out(ArrayLayout(signed(32), cols))
        The row presented is elementwise: its bias is ``ew_bias`` (table Y), not the bank's.
    ev_acc_read, ev_act_read, ev_act_op, ev_act_write : Out(1)
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        super().__init__({
            "start": In(1), "accaddr": In(16), "aaddr": In(16), "rows": In(16), "dest": In(1),
            "bank": In(1), "perchan": In(1), "ew": In(1), "xaddr": In(16), "yaddr": In(16),
            "reading": Out(1), "busy": Out(1), "bias_bank": Out(1), "per_channel": Out(1),
            "acc_rd": In(read_port_signature(c.acc_depth, 32 * c.cols)),
            "act_rd": In(read_port_signature(c.act_depth, 8 * c.act_word_bytes)),
            "tab_we": In(1), "tab_addr": In(range(TABLE_BYTES // table_word_bytes(c))),
            "tab_wdata": In(8 * table_word_bytes(c)),
            "ew_valid": Out(1), "ew_bias": Out(data.ArrayLayout(signed(32), c.cols)),
            "act_wr": In(write_port_signature(c.act_depth, 8 * c.act_word_bytes)),
            "i_valid": Out(1), "i_acc": Out(data.ArrayLayout(signed(32), c.cols)),
            "o_data": In(data.ArrayLayout(signed(8), c.cols)),
            "push": Out(1), "push_data": Out(8 * c.bus_bytes),
            "ev_acc_read": Out(1), "ev_act_read": Out(1), "ev_act_op": Out(1), "ev_act_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.d.comb += [self.acc_rd.en.eq(0), self.act_rd.en.eq(0)]     # memory read ports default to enabled
        raddr, waddr, rows_left = Signal(16), Signal(16), Signal(17)
        xaddr, yaddr = Signal(16), Signal(16)
        dest, ew, second = Signal(), Signal(), Signal()     # ``second``: an elementwise row's y read
        # ``reading`` is ``rows_left != 0`` and ``busy`` ``reading`` or a row in flight, each one cycle
        # ahead from the next state (a ``start`` comes only while not ``reading``; ``reading`` wins, as
        # its assignment to ``rows_left`` below does).
        row_done = ~ew | second                            # this cycle reads a row's last word
        reading_next = Mux(self.reading, (rows_left != 1) | ~row_done, self.start & (self.rows != 0))
        m.d.comb += [self.acc_rd.addr.eq(raddr), self.act_rd.addr.eq(Mux(second, yaddr, xaddr))]
        with m.If(self.start):
            m.d.sync += [raddr.eq(self.accaddr), waddr.eq(self.aaddr), rows_left.eq(self.rows),
                         xaddr.eq(self.xaddr), yaddr.eq(self.yaddr), ew.eq(self.ew), second.eq(0),
                         dest.eq(self.dest), self.bias_bank.eq(self.bank), self.per_channel.eq(self.perchan)]
        with m.If(self.reading):
            with m.If(ew):
                m.d.comb += [self.act_rd.en.eq(1), self.ev_act_read.eq(1)]
                m.d.sync += second.eq(~second)
            with m.Else():
                m.d.comb += [self.acc_rd.en.eq(1), self.ev_acc_read.eq(1)]
            with m.If(row_done):
                m.d.sync += [raddr.eq(raddr + 1), xaddr.eq(xaddr + 1), yaddr.eq(yaddr + 1),
                             rows_left.eq(rows_left - 1)]

        # Elementwise rows: the words' lanes index the tables a cycle after each read (x, then y), the
        # entries arrive a cycle later; the row is presented with y's entry.
        look_x, look_y = Signal(), Signal()       # the SRAM data is x's / y's word
        m.d.sync += [look_x.eq(self.reading & ew & ~second), look_y.eq(self.reading & ew & second)]
        entry_x = Signal(data.ArrayLayout(signed(32), c.cols))
        entry_y = self._tables(m, look_x | look_y, look_y)
        with m.If(look_y):                        # (the cycle x's entries arrive)
            m.d.sync += entry_x.eq(entry_y)
        m.d.sync += [self.i_valid.eq(self.reading & ~ew | look_y), self.ew_valid.eq(look_y)]
        m.d.comb += [self.i_acc.as_value().eq(Mux(self.ew_valid, entry_x.as_value(), self.acc_rd.data)),
                     self.ew_bias.eq(entry_y)]

        # -- each row's destination travels beside the activation unit: stage 0 lines up with i_valid,
        # stage P with the row's result ------------------------------------------------------------
        # (``write``: valid and bound for the SRAM, decided at stage 0, so that the SRAM write enable is
        # a register.)
        tag_layout = data.StructLayout({"valid": 1, "dest": 1, "write": 1, "waddr": 16})
        tags = [Signal(tag_layout, name=f"tag_d{i}") for i in range(ACT_LATENCY + 1)]
        row_out = self.reading & ~ew | look_y     # a row is presented in the next cycle
        with m.If(row_out & ~self.start):         # (an elementwise row's last cycle may see the next start)
            m.d.sync += waddr.eq(waddr + 1)
        m.d.sync += [tags[0].valid.eq(row_out), tags[0].dest.eq(dest), tags[0].write.eq(row_out & ~dest),
                     tags[0].waddr.eq(waddr)]
        m.d.sync += [nxt.eq(prev) for prev, nxt in zip(tags, tags[1:])]
        m.d.sync += [self.reading.eq(reading_next),
                     self.busy.eq(reading_next | self.reading | look_y | Cat(tag.valid for tag in tags[:-1]).any())]
        out = tags[-1]
        m.d.comb += [self.act_wr.addr.eq(out.waddr),
                     self.act_wr.data.eq(self.o_data.as_value()[:8 * min(c.rows, c.cols)])]
        with m.If(out.valid):
            m.d.comb += self.ev_act_op.eq(1)
            with m.If(out.dest):
                m.d.comb += [self.push.eq(1), self.push_data.eq(self.o_data.as_value())]
        m.d.comb += [self.act_wr.en.eq(out.write), self.ev_act_write.eq(out.write)]
        return m

    def _tables(self, m, en, second):
        """The elementwise tables: per lane, entry ``lane value + 128`` (+ 256 for table Y when
        ``second``) of the activation word on ``act_rd.data``, read when ``en``; the entries one cycle
        later (held while ``en`` is low)."""
        c = self._config
        per_word = table_word_bytes(c) // 4                  # entries per table word
        low = per_word.bit_length() - 1
        m.submodules.tables = tables = ReplicatedMemory(width=8 * table_word_bytes(c),
                                                        depth=TABLE_BYTES // table_word_bytes(c),
                                                        read_ports=c.cols)
        m.d.comb += [tables.wr.en.eq(self.tab_we), tables.wr.addr.eq(self.tab_addr),
                     tables.wr.data.eq(self.tab_wdata)]
        word = self.act_rd.data
        entries = Signal(data.ArrayLayout(signed(32), c.cols))
        for i in range(c.cols):
            value = word[8 * i:8 * i + 8] if i < c.rows else Const(0, 8)
            index = Cat(value[:7], ~value[7], second)        # value + 128, then the table
            port, pick = tables.read_port(i), Signal(max(1, low), name=f"tab{i}_pick")
            m.d.comb += [port.en.eq(en), port.addr.eq(index[low:])]
            if low:
                with m.If(en):
                    m.d.sync += pick.eq(index[:low])
                m.d.comb += entries[i].eq(port.data.word_select(pick, 32))
            else:
                m.d.comb += entries[i].eq(port.data)
        return entries
