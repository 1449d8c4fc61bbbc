"""EX unit: COMPUTE, streams activation rows through the systolic array into the accumulator SRAM."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.checks import dw_stream_words
from opennpu.golden.isa import AStep, Opcode
from opennpu.golden.timing import array_latency

from .common import read_port_signature, write_port_signature
from .decoder import command_layout

__all__ = ["DW_CONFIG", "ExecuteUnit"]

#: The CONFIG fields a depthwise COMPUTE reads (``ExecuteUnit`` inputs of the same names).
DW_CONFIG = ("dw_width", "dw_period", "dw_height", "dw_pad", "dw_stride2")


class _RowTag(data.Struct):
    """What travels beside a row through the array: where its result goes."""
    valid: 1
    accumulate: 1
    accaddr: 16


class ExecuteUnit(wiring.Component):
    """Issues one activation row per cycle into the array and writes results back.

    Timing: ``start`` in cycle d; row j's activation SRAM read (word ``aaddr + j * step``, ``astep``:
    ``golden.isa.AStep``) in d+1+j (``issue_busy``), the row
    enters the array in d+2+j and its result is written (overwrite, or read-modify-write when
    ``accumulate``: the old word is read in d+j+L through a port transparent to the write) in d+2+j+L,
    L = array latency (>= 3). The last row is issued in e = d+rows; then ``move`` pulses, the issue
    slot frees (a new COMPUTE may start in e itself: the dispatcher sees ``move``, and the new
    command's first row is read in e+1, right behind the last one) and the command drains: it is done
    after e+L+1. Several COMPUTEs may drain at once (their rows carry their accumulator addresses
    through the array, ``_RowTag``); since each drains the same L+1 cycles after its move, the last
    one moved is done last: ``drain_busy`` is high until it is done (e+1 .. e+L+1), ``older_busy``
    until the one moved before it is.

    Depthwise (``dw``; ``golden/isa.py``): the command streams ``rows + R - 1`` words
    (``golden.checks.dw_stream_words``, R = ``config.rows``), one a cycle with the timing above, so
    e = d+rows+R-1. Word q sits at image position (r, c): (``drow``, ``dcol``) first, then c + 1, or
    column 0 of row r + 1 after column ``dw_period - 1`` (c: 8 bits, wrapping at 256 without a row
    step). A data position (0 <= r < ``dw_height``, c < ``dw_width``) reads the next activation word
    (``aaddr``, ``aaddr + 1``, ...: the address steps only on data positions); any other is a pad:
    every lane ``dw_pad``, no read (the pad flag travels a cycle beside the read, to meet its data).
    The words enter the array as depthwise rows (``a_dw``), whose output j (the row of word j + R - 1)
    counts output columns from 0 like c (and the parity of its output row, which steps after column
    ``dw_period - 1``); it is written (its row tag valid, to ``accaddr``, ``accaddr + 1``, ...) when its
    column is below ``dw_width`` (``dw_stride2``: and even, in an even row); the first R - 1 words (the FIR's
    warm-up) and the other outputs write nothing. The drain and read-modify-write timing is the
    above for every written row.

    Members
    -------
    start, aaddr, astep, accaddr, rows, accumulate, dw, drow, dcol, buf, row_macs : In
        Dispatch pulse, command fields, the PE buffer to use and useful MACs per row of that buffer.
    dw_width, dw_period, dw_height, dw_pad, dw_stride2 : In
        The CONFIG registers of the depthwise image (stable while a COMPUTE runs: CONFIG waits for
        every unit).
    issue_busy, drain_busy, older_busy, move : Out(1)
    act_rd, acc_rmw_rd, acc_wr : SRAM ports.
    a_valid, a_data, a_buf, a_dw : Out, out_valid, out_data : In
        Systolic array row interface.
    ev_row, ev_act_read, ev_acc_read, ev_acc_write : Out(1); macs : Out(16)
        Counter events of this cycle: a word issued (a busy cycle), an activation word read; ``macs``,
        valid with ``ev_row``: ``row_macs`` if the word's output is written, else 0.
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        comp, conf = command_layout(Opcode.COMPUTE), command_layout(Opcode.CONFIG)
        super().__init__({
            "start": In(1), "aaddr": In(16), "astep": In(2), "accaddr": In(16), "rows": In(16), "accumulate": In(1),
            "dw": In(1), "drow": In(comp["drow"].shape), "dcol": In(comp["dcol"].shape),
            "buf": In(1), "row_macs": In(16),
            **{name: In(conf[name].shape) for name in DW_CONFIG},
            "issue_busy": Out(1), "drain_busy": Out(1), "older_busy": Out(1), "move": Out(1),
            "act_rd": In(read_port_signature(c.act_depth, 8 * c.act_word_bytes)),
            "acc_rmw_rd": In(read_port_signature(c.acc_depth, 32 * c.cols)),
            "acc_wr": In(write_port_signature(c.acc_depth, 32 * c.cols)),
            "a_valid": Out(1), "a_data": Out(data.ArrayLayout(signed(8), c.rows)), "a_buf": Out(1), "a_dw": Out(1),
            "out_valid": In(1), "out_data": In(data.ArrayLayout(signed(32), c.cols)),
            "ev_row": Out(1), "ev_act_read": Out(1), "ev_acc_read": Out(1), "ev_acc_write": Out(1), "macs": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.d.comb += self.act_rd.en.eq(0)            # memory read ports default to enabled
        latency = array_latency(c.rows, c.cols)
        aaddr, accaddr, rows_left = Signal(16), Signal(16), Signal(17)
        accumulate, buf, row_macs = Signal(), Signal(), Signal(16)
        step = Signal(2)                              # activation words between rows: 1, 2 or 0
        drain_left, older_left = Signal(range(latency + 2)), Signal(range(latency + 2))
        last = Signal()                               # the word issuing now is the last, kept in a register
        # Depthwise: the warm-up words still to issue before ``rows_left`` counts (0 otherwise), the image
        # position of the next word and the output column of the next output. The image row stops at
        # ``img_rows``, past every image row (``dw_height`` < ``img_rows``): rows only go up from there.
        dw, warm = Signal(), Signal(range(c.rows))
        img_rows = 1 << len(self.dw_height)
        img_row = Signal(range(-(1 << (len(self.drow) - 1)), img_rows + 1))
        img_col, out_col = Signal.like(self.dcol), Signal.like(self.dcol)
        odd_row = Signal()                            # the output row of the next output is odd

        # -- issue slot -------------------------------------------------------------------------
        issuing, reads, written = Signal(), Signal(), Signal()
        col_next, out_next = img_col + 1, out_col + 1
        m.d.comb += [
            issuing.eq(self.issue_busy & (rows_left != 0)),
            reads.eq(~dw | ((img_row >= 0) & (img_row < self.dw_height) & (img_col < self.dw_width))),
            written.eq((warm == 0) & (~dw | ((out_col < self.dw_width)
                                             & ~(self.dw_stride2 & (out_col[0] | odd_row))))),
            self.move.eq(self.issue_busy & last),
            self.ev_row.eq(issuing), self.ev_act_read.eq(issuing & reads), self.macs.eq(Mux(written, row_macs, 0)),
        ]
        m.d.comb += self.act_rd.addr.eq(aaddr)        # (from the register, read or not)
        with m.If(issuing):
            m.d.comb += self.act_rd.en.eq(reads)
            # (the 8-bit column wraps from 255 to 0 in the same row)
            m.d.sync += [img_col.eq(Mux(col_next == self.dw_period, 0, col_next)),
                         img_row.eq(img_row + ((col_next == self.dw_period) & (img_row < img_rows)))]
            with m.If(reads):
                m.d.sync += aaddr.eq(aaddr + step)
            with m.If(warm != 0):
                m.d.sync += [warm.eq(warm - 1), last.eq((warm == 1) & (rows_left == 1))]
            with m.Else():
                m.d.sync += [rows_left.eq(rows_left - 1), last.eq(rows_left <= 2), accaddr.eq(accaddr + written),
                             out_col.eq(Mux(out_next == self.dw_period, 0, out_next)),
                             odd_row.eq(odd_row ^ (out_next == self.dw_period))]

        # -- drain: the last COMPUTE moved (``drain_left``) and the one moved before it (``older_left``;
        # any earlier one is done before it) -----------------------------------------------------------
        with m.If(self.older_busy):
            m.d.sync += older_left.eq(older_left - 1)
            with m.If(older_left == 1):
                m.d.sync += self.older_busy.eq(0)
        with m.If(self.move):
            m.d.sync += [self.issue_busy.eq(0), self.drain_busy.eq(1), drain_left.eq(latency + 1),
                         self.older_busy.eq(self.drain_busy & (drain_left != 1)), older_left.eq(drain_left - 1)]
        with m.Elif(self.drain_busy):
            m.d.sync += drain_left.eq(drain_left - 1)
            with m.If(drain_left == 1):
                m.d.sync += self.drain_busy.eq(0)
        # A start (possibly in the ``move`` cycle, while the last row of the command before issues)
        # takes the issue slot: its assignments come last and win.
        warm_up = dw_stream_words(c, 0)               # (R - 1 words)
        with m.If(self.start):
            m.d.sync += [self.issue_busy.eq(1), aaddr.eq(self.aaddr), accaddr.eq(self.accaddr),
                         step.eq(Cat(self.astep == AStep.UNIT, self.astep == AStep.DOUBLE)),
                         rows_left.eq(self.rows), last.eq((self.rows <= 1) & (~self.dw | (warm_up == 0))),
                         accumulate.eq(self.accumulate), buf.eq(self.buf), row_macs.eq(self.row_macs),
                         dw.eq(self.dw), warm.eq(Mux(self.dw, warm_up, 0)), img_row.eq(self.drow),
                         img_col.eq(self.dcol), out_col.eq(0), odd_row.eq(0)]

        # -- row tags travel beside the array: stage 0 lines up with the SRAM data ----------------
        tag = Signal(_RowTag)
        tag_buf, tag_dw, pad = Signal(), Signal(), Signal()
        m.d.sync += [tag.valid.eq(issuing & written), tag.accumulate.eq(accumulate), tag.accaddr.eq(accaddr),
                     tag_buf.eq(buf), tag_dw.eq(dw), pad.eq(~reads)]
        m.d.comb += [self.a_valid.eq(tag.valid), self.a_buf.eq(tag_buf), self.a_dw.eq(tag_dw),
                     self.a_data.as_value().eq(Mux(pad, Cat(*[self.dw_pad] * c.rows), self.act_rd.data))]
        stages = [tag]
        for i in range(latency):
            nxt = Signal(_RowTag, name=f"tag_d{i + 1}")
            m.d.sync += nxt.eq(stages[-1])
            stages.append(nxt)
        # Read-modify-write, pipelined so that no path runs from the accumulator SRAM's output through
        # the adder back into it: the old word is read two cycles before its write (``rmw``), lands in
        # ``old_q``, and the add happens at the array output (``done``). The early read sees every
        # write up to its own cycle (the same-cycle one through the port's transparency) but not the
        # one in the cycle after, which is the row just ahead of it (``stages[-2]``). Rows of one
        # COMPUTE have distinct addresses; the next COMPUTE issues right behind the last row of this
        # one, so its first row may read the word that row writes a cycle later: then ``fwd`` (the
        # two rows' addresses compared a cycle ahead, in registers) takes the word being written
        # instead of the SRAM's.
        rmw = stages[-3]
        m.d.comb += [self.acc_rmw_rd.en.eq(rmw.valid & rmw.accumulate), self.acc_rmw_rd.addr.eq(rmw.accaddr),
                     self.ev_acc_read.eq(rmw.valid & rmw.accumulate)]
        ahead = stages[-2]
        fwd = Signal()
        m.d.sync += fwd.eq(ahead.valid & (ahead.accaddr == rmw.accaddr))
        # (``old_q`` is 0 for a row that overwrites: a synchronous reset of the register, no gate at the adder.)
        old_q = Signal(32 * c.cols)
        with m.If(ahead.valid & ahead.accumulate):        # the row that read in the cycle before
            m.d.sync += old_q.eq(Mux(fwd, self.acc_wr.data, self.acc_rmw_rd.data))
        with m.Else():
            m.d.sync += old_q.eq(0)
        done = stages[-1]
        old = data.View(data.ArrayLayout(signed(32), c.cols), old_q)
        new = data.View(data.ArrayLayout(signed(32), c.cols), self.acc_wr.data)
        m.d.comb += [self.acc_wr.en.eq(done.valid), self.acc_wr.addr.eq(done.accaddr),
                     self.ev_acc_write.eq(done.valid)]
        for col in range(c.cols):
            m.d.comb += new[col].eq(self.out_data[col] + old[col])
        return m
