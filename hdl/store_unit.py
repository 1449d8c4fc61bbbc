"""ST unit: STORE (SRAM words to data-out) and COUNTERS (counter snapshot to data-out)."""
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.program import COUNTER_NAMES

from .common import read_port_signature
from .counters import counter_readout_signature

__all__ = ["StoreMode", "StoreUnit"]


class StoreMode:
    ACT = 0
    WGT = 1
    ACC = 2
    COUNTERS = 3


class StoreUnit(wiring.Component):
    """Streams SRAM words (or the counters) out, one data-out beat per cycle.

    Timing: ``start`` in cycle d; word 0 read in d+1; beats pushed d+2 .. d+1+n*b (b beats per word;
    the next word is read during the previous word's last beat); ``busy`` high d+1 .. d+1+n*b.
    COUNTERS behaves as one word of ``beats(8 * len(COUNTER_NAMES))`` beats read from the counters
    (``counters``, ``hdl/counters.py``): ``sample`` in cycle d+1, which fixes every cycle and event
    before cycle d, ``held`` while the beats are pushed, and ``sel`` the beat being pushed. While the
    unit does not stream, ``sel`` is ``counter_sel`` (the host link's STATUS reply reads the counters so
    while the NPU is idle).

    Members
    -------
    start, mode, addr, rows : In
    counter_sel : In(range(beats(8 * len(COUNTER_NAMES))))
    counters : Out(counter_readout_signature(config))
    busy : Out(1)
    act_rd, wgt_rd, acc_rd : SRAM read ports.
    push, push_data : Out
    ev_act_read, ev_wgt_read, ev_acc_read : Out(1)
    """

    def __init__(self, config: NpuConfig):
        self._config = c = config
        super().__init__({
            "start": In(1), "mode": In(2), "addr": In(16), "rows": In(16),
            "counter_sel": In(range(c.beats(8 * len(COUNTER_NAMES)))), "counters": Out(counter_readout_signature(c)),
            "busy": Out(1),
            "act_rd": In(read_port_signature(c.act_depth, 8 * c.act_word_bytes)),
            "wgt_rd": In(read_port_signature(c.wgt_depth, 8 * c.wgt_word_bytes)),
            "acc_rd": In(read_port_signature(c.acc_depth, 32 * c.cols)),
            "push": Out(1), "push_data": Out(8 * c.bus_bytes),
            "ev_act_read": Out(1), "ev_wgt_read": Out(1), "ev_acc_read": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bus = 8 * c.bus_bytes
        # Read ports enable only on a read (their data must hold between the beats of a word); their
        # address is the ``addr`` register whether they read or not (no logic between it and the SRAMs).
        m.d.comb += [self.act_rd.en.eq(0), self.wgt_rd.en.eq(0), self.acc_rd.en.eq(0)]
        sources = {   # mode: (word bits, read port, read event)
            StoreMode.ACT: (self.act_rd.data, self.act_rd, self.ev_act_read),
            StoreMode.WGT: (self.wgt_rd.data, self.wgt_rd, self.ev_wgt_read),
            StoreMode.ACC: (self.acc_rd.data, self.acc_rd, self.ev_acc_read),
        }
        mode, first = Signal(2), Signal()
        addr, words_left = Signal(16), Signal(17)
        m.d.comb += [port.addr.eq(addr) for _, port, _ in sources.values()]
        counter_beats = c.beats(8 * len(COUNTER_NAMES))
        most_beats = max(c.beats(len(v[0]) // 8) for v in sources.values()) + counter_beats
        beat = Signal(range(most_beats + 1))

        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), mode.eq(self.mode), first.eq(1), addr.eq(self.addr), beat.eq(0),
                         words_left.eq(Mux(self.mode == StoreMode.COUNTERS, 1, self.rows))]

        reading_counters = self.busy & (mode == StoreMode.COUNTERS)
        m.d.comb += [self.counters.sel.eq(Mux(self.busy, beat, self.counter_sel)),
                     self.counters.sample.eq(reading_counters & first),
                     self.counters.held.eq(reading_counters & ~first)]
        # Beats per word of each mode, and the data of each: a word's beats in order (COUNTERS: the one
        # beat the counters give for ``sel``).
        beats_of = {mode_value: c.beats(len(word) // 8) for mode_value, (word, _, _) in sources.items()}
        beats_of[StoreMode.COUNTERS] = counter_beats
        chunks = {mode_value: [Cat(word, Const(0, beats_of[mode_value] * bus - len(word))).word_select(i, bus)
                               for i in range(beats_of[mode_value])]
                  for mode_value, (word, _, _) in sources.items()}
        chunks[StoreMode.COUNTERS] = [self.counters.beat]
        # ``chunk``: one bit per chunk, set for the one being pushed, a register: set for the mode's first
        # chunk in the ``first`` cycle, moved to its next one after each push (``next_chunk``), cleared
        # after the last. ``push_data`` is an OR of the chunks gated by their bits: no multiplexer on
        # ``mode`` or ``beat`` behind the SRAMs' read data.
        offsets, total = {}, 0
        for mode_value, data_chunks in chunks.items():
            offsets[mode_value], total = total, total + len(data_chunks)
        chunk = Signal(total)
        gated = [Mux(chunk[offsets[mode_value] + i], data_chunk, 0)
                 for mode_value, data_chunks in chunks.items() for i, data_chunk in enumerate(data_chunks)]
        while len(gated) > 1:
            gated = [a | b for a, b in zip(gated[::2], gated[1::2])] + gated[len(gated) & ~1:]
        m.d.comb += self.push_data.eq(gated[0])
        next_chunk = Cat(*(chunk[offsets[mode_value] + (i - 1) % len(data_chunks)]
                           for mode_value, data_chunks in chunks.items() for i in range(len(data_chunks))))

        read = Signal()
        with m.If(self.busy):
            with m.If(first):
                m.d.comb += read.eq(1)
                m.d.sync += first.eq(0)
                with m.Switch(mode):
                    for mode_value in chunks:
                        with m.Case(mode_value):
                            m.d.sync += chunk.eq(1 << offsets[mode_value])
            with m.Else():
                m.d.comb += self.push.eq(1)
                m.d.sync += chunk.eq(next_chunk)
                with m.Switch(mode):
                    for mode_value, beats in beats_of.items():
                        with m.Case(mode_value):
                            with m.If(beat == beats - 1):
                                m.d.sync += beat.eq(0)
                                with m.If(words_left == 1):
                                    m.d.sync += [self.busy.eq(0), chunk.eq(0)]
                                with m.Else():
                                    m.d.comb += read.eq(1)
                                    m.d.sync += words_left.eq(words_left - 1)
                            with m.Else():
                                m.d.sync += beat.eq(beat + 1)
        with m.If(read):
            m.d.sync += addr.eq(addr + 1)
            with m.Switch(mode):
                for mode_value, (_, port, event) in sources.items():
                    with m.Case(mode_value):
                        m.d.comb += [port.en.eq(1), event.eq(1)]
        return m
