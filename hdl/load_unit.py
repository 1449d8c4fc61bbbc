"""LD unit: LOAD, LOAD_BIAS, LOAD_QUANT and LOAD_LUT, the only consumer of the data-in stream."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import LutTable

from .common import write_port_signature

__all__ = ["LoadKind", "LoadUnit", "TABLE_BYTES", "table_word_bytes"]

#: The elementwise tables: X and Y, 256 int32 entries each (``golden.isa.LutTable.EW``).
TABLE_BYTES = LutTable.EW.nbytes


def table_word_bytes(config: NpuConfig) -> int:
    """Bytes per elementwise-table word: a data-in beat, at least one int32 entry."""
    return max(4, config.bus_bytes)


class LoadKind:
    ACT = 0
    WGT = 1
    BIAS = 2
    LUT = 3
    QUANT = 4
    TABLE = 5           # LOAD_LUT table=1: the elementwise tables


_DISCARD = 7        # (internal: no ``Case`` matches it, so a discarded beat writes nothing)


class LoadUnit(wiring.Component):
    """Moves data-in beats into the activation / weight SRAM, the bias and requantization registers or
    the LUT.

    Timing: ``start`` in cycle d; one beat consumed per cycle d+1 .. d+B (B = rows for SRAM loads,
    since a beat holds a whole int8 word; ``beats(4*cols)`` for bias, ``beats(5*cols)`` for the
    per-channel requantization, ``beats(256)`` for the LUT, ``beats(2048)`` for the elementwise tables); ``busy`` is high d+1 .. d+B and
    ``issue_ends`` in d+B, when the next command may start (its first beat in d+B+1: beats stream
    without a gap). Each SRAM word is written in the cycle its beat arrives; a register bank with its
    last beat.

    Members
    -------
    start, kind, addr, rows : In
        Dispatch pulse and command fields (``kind``: ``LoadKind``).
    discard : In(1)
        With ``start``: a rejected command's beats, consumed in the same cycles and written nowhere.
    busy, want : Out(1)
        Executing; wants a data-in beat this cycle (identical: one beat per busy cycle).
    issue_ends : Out(1)
        This is the command's last beat: a command may start in this cycle.
    want_next : Out(1)
        ``want`` in the next cycle, if this cycle runs (for the registered stall decision).
    din : In(bus_bytes * 8)
        The data-in beat (valid whenever the machine is not frozen).
    act_wr, wgt_wr : memory write ports.
    bank : In(1)
        LOAD_BIAS / LOAD_QUANT: which of the two banks to fill.
    bias : Out(ArrayLayout(ArrayLayout(signed(32), cols), 2))
        The two bias register banks.
    multiplier : Out(ArrayLayout(ArrayLayout(unsigned(31), cols), 2))
    shift : Out(ArrayLayout(ArrayLayout(signed(8), cols), 2))
        The two banks of per-channel requantization parameters (``LOAD_QUANT``: ``cols`` int32 M0,
        of which the low 31 bits are kept, then ``cols`` int8 shifts; the drivers send only in-range
        values).
    lut_we, lut_addr, lut_wdata : Out
        LUT write, ``bus_bytes`` entries per beat starting at ``lut_addr``.
    tab_we, tab_addr, tab_wdata : Out
        Elementwise-table write: word ``tab_addr`` of ``table_word_bytes(config)`` bytes (entries X[0..255]
        then Y[0..255], int32 little-endian), once per beat (``bus_bytes`` < 4: once per 4-byte entry, the
        beats gathered).
    ev_beat, ev_act_write, ev_wgt_write : Out(1)
        Counter events of this cycle.
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        self._lut_width = min(c.bus_bytes, 256)
        super().__init__({
            "start": In(1), "kind": In(3), "addr": In(16), "rows": In(16), "bank": In(1), "discard": In(1),
            "busy": Out(1), "issue_ends": Out(1), "want": Out(1), "want_next": Out(1), "din": In(8 * c.bus_bytes),
            "act_wr": In(write_port_signature(c.act_depth, 8 * c.act_word_bytes)),
            "wgt_wr": In(write_port_signature(c.wgt_depth, 8 * c.wgt_word_bytes)),
            "bias": Out(data.ArrayLayout(data.ArrayLayout(signed(32), c.cols), 2)),
            "multiplier": Out(data.ArrayLayout(data.ArrayLayout(unsigned(31), c.cols), 2)),
            "shift": Out(data.ArrayLayout(data.ArrayLayout(signed(8), c.cols), 2)),
            "lut_we": Out(1), "lut_addr": Out(range(256)),
            "lut_wdata": Out(data.ArrayLayout(signed(8), self._lut_width)),
            "tab_we": Out(1), "tab_addr": Out(range(TABLE_BYTES // table_word_bytes(c))),
            "tab_wdata": Out(8 * table_word_bytes(c)),
            "ev_beat": Out(1), "ev_act_write": Out(1), "ev_wgt_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bias_beats, quant_beats = c.beats(4 * c.cols), c.beats(5 * c.cols)
        kind, bank, discard = Signal(3), Signal(), Signal()
        # ``busy`` and an SRAM load that is not discarded, as registers: the write enables, with no logic
        # between them and the SRAMs' bank logic.
        act_writing, wgt_writing = Signal(), Signal()
        addr = Signal(16)
        left = Signal(17)            # beats still to come
        table_beats = c.beats(TABLE_BYTES)
        beat = Signal(range(max(quant_beats, table_beats) + 1))
        # Elementwise tables: a word per beat, or (beats narrower than an entry) per ``gather`` beats.
        gather = table_word_bytes(c) // c.bus_bytes
        gathered = Signal(8 * table_word_bytes(c))
        m.d.comb += [self.tab_addr.eq(beat >> (gather.bit_length() - 1)),
                     self.tab_wdata.eq(Cat(gathered[8 * c.bus_bytes:], self.din))]
        # Register loads shift in from the top: after the last of B beats, beat 0 sits B beats below
        # the top (a bias load, with fewer beats than LOAD_QUANT, ends higher up).
        regs_shift = Signal(8 * c.bus_bytes * quant_beats)
        bias_base = 8 * c.bus_bytes * (quant_beats - bias_beats)

        # SRAM write addresses and data straight from the ``addr`` register and the beat; only the
        # enables depend on the state.
        m.d.comb += [self.act_wr.addr.eq(addr), self.act_wr.data.eq(self.din),
                     self.wgt_wr.addr.eq(addr), self.wgt_wr.data.eq(self.din),
                     self.act_wr.en.eq(act_writing), self.ev_act_write.eq(act_writing),
                     self.wgt_wr.en.eq(wgt_writing), self.ev_wgt_write.eq(wgt_writing)]
        m.d.comb += [self.want.eq(self.busy), self.ev_beat.eq(self.busy),
                     self.issue_ends.eq(self.busy & (left == 1)),
                     self.want_next.eq(self.start | (self.busy & (left != 1)))]
        with m.If(self.busy):
            m.d.sync += [left.eq(left - 1), beat.eq(beat + 1), addr.eq(addr + 1)]
            with m.If(left == 1):
                m.d.sync += [self.busy.eq(0), act_writing.eq(0), wgt_writing.eq(0)]
            with m.Switch(Mux(discard, _DISCARD, kind)):
                with m.Case(LoadKind.BIAS, LoadKind.QUANT):
                    shifted = Cat(regs_shift[8 * c.bus_bytes:], self.din)
                    m.d.sync += regs_shift.eq(shifted)
                    with m.If((left == 1) & (kind == LoadKind.BIAS)):
                        m.d.sync += self.bias[bank].as_value().eq(shifted[bias_base:bias_base + 32 * c.cols])
                    with m.If((left == 1) & (kind == LoadKind.QUANT)):
                        for i in range(c.cols):
                            m.d.sync += [self.multiplier[bank][i].eq(shifted[32 * i:32 * i + 31]),
                                         self.shift[bank][i].eq(shifted.word_select(4 * c.cols + i, 8))]
                with m.Case(LoadKind.LUT):
                    m.d.comb += [self.lut_we.eq(1), self.lut_addr.eq(beat * c.bus_bytes),
                                 self.lut_wdata.as_value().eq(self.din)]
                with m.Case(LoadKind.TABLE):
                    m.d.sync += gathered.eq(self.tab_wdata)
                    m.d.comb += self.tab_we.eq((beat & (gather - 1)) == gather - 1)
        # (after the busy block: a command starting in the last beat of the one before wins)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), kind.eq(self.kind), addr.eq(self.addr), beat.eq(0), bank.eq(self.bank),
                         discard.eq(self.discard),
                         act_writing.eq((self.kind == LoadKind.ACT) & ~self.discard),
                         wgt_writing.eq((self.kind == LoadKind.WGT) & ~self.discard)]
            with m.Switch(self.kind):
                with m.Case(LoadKind.ACT, LoadKind.WGT):
                    m.d.sync += left.eq(self.rows)
                with m.Case(LoadKind.BIAS):
                    m.d.sync += left.eq(bias_beats)
                with m.Case(LoadKind.QUANT):
                    m.d.sync += left.eq(quant_beats)
                with m.Case(LoadKind.LUT):
                    m.d.sync += left.eq(c.beats(256))
                with m.Case(LoadKind.TABLE):
                    m.d.sync += left.eq(table_beats)
        return m
