"""Hardware performance counters, including the ``energy_fj`` accumulator, kept in a small memory."""
from amaranth import *
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import Precision
from opennpu.golden.model import COUNTER_BEATS_BYTES, event_costs
from opennpu.golden.program import COUNTER_NAMES

__all__ = ["Events", "Counters", "counter_readout_signature", "costed_events"]


def counter_readout_signature(config: NpuConfig) -> wiring.Signature:
    """The reader's side of the counter readout (the ST unit, ``hdl/store_unit.py``).

    ``sel``: a beat of the COUNTERS word (``COUNTER_NAMES`` order, 8 bytes per counter, zero-extended);
    ``beat``: that beat, combinational from ``sel``. ``sample``: in this running cycle a COUNTERS command
    samples the counters; ``held``: the sampled values are being read out, ``sel`` from 0 up, one beat
    per running cycle (``beat`` shows them instead of the live ones)."""
    return wiring.Signature({"sel": Out(range(config.beats(COUNTER_BEATS_BYTES))), "sample": Out(1),
                             "held": Out(1), "beat": In(8 * config.bus_bytes)})


class Events(data.Struct):
    """What happened in one cycle (counts, since several units may touch one SRAM at once)."""
    row: 1            # a row entered the array (busy cycle)
    macs: 16          # useful MACs of that row
    int4_macs: 1      # they are 4-bit MACs (a4w4), with their own energy cost and counter
    act_reads: 2
    act_writes: 2
    wgt_reads: 2
    wgt_writes: 1
    acc_reads: 2
    acc_writes: 1
    beat_in: 1
    beat_out: 1
    act_row: 1        # a row of ``cols`` elements left the activation unit


def costed_events(ev, config: NpuConfig) -> dict:
    """The event counters that cost energy apart from MACs: ``{name: (event field, factor)}``, the counter
    adding ``field * factor`` per cycle (``golden.model.event_costs`` names)."""
    return {"act_reads": (ev.act_reads, 1), "act_writes": (ev.act_writes, 1), "wgt_reads": (ev.wgt_reads, 1),
            "wgt_writes": (ev.wgt_writes, 1), "acc_reads": (ev.acc_reads, 1), "acc_writes": (ev.acc_writes, 1),
            "dma_in_bytes": (ev.beat_in, config.bus_bytes), "dma_out_bytes": (ev.beat_out, config.bus_bytes),
            "act_ops": (ev.act_row, config.cols)}


def _cost_sum(fields: list, group_bits: int = 4):
    """``sum(field * cost)`` over ``(field, cost)`` pairs of narrow unsigned fields, with no multiplier: the
    fields' bits are cut into chunks of at most ``group_bits`` bits (a chunk at bit offset k costs
    ``cost << k`` per unit), the chunks packed into groups of at most ``group_bits`` bits, each group's sum
    a table of constants on its bits (one LUT4 per result bit), and the groups added in a balanced tree."""
    chunks = [(field[k:k + group_bits], cost << k) for field, cost in fields
              for k in range(0, len(field), group_bits)]
    groups = []            # first fit, widest chunks first
    for chunk in sorted(chunks, key=lambda chunk: -len(chunk[0])):
        for group in groups:
            if sum(len(f) for f, _ in group) + len(chunk[0]) <= group_bits:
                group.append(chunk)
                break
        else:
            groups.append([chunk])
    terms = []
    for group in groups:
        def entry(i, group=group):
            total = 0
            for f, cost in group:
                total += (i & ((1 << len(f)) - 1)) * cost
                i >>= len(f)
            return total
        index = Cat(*(f for f, _ in group))
        terms.append(Array(C(entry(i)) for i in range(1 << len(index)))[index])
    return _balanced_sum(terms) if terms else C(0)


def _balanced_sum(terms: list):
    """The sum of ``terms`` as a balanced tree of adders (depth log2 of their number, not their number)."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


class Counters(wiring.Component):
    """``config.counter_bits``-wide counters in ``COUNTER_NAMES`` order; they wrap like the golden model's.

    ``cycles`` += ``active`` and ``stall_cycles`` += ``stall`` every cycle, in registers; their values
    include every cycle before the current one. The events of each running (``run``) cycle go through a
    pipeline: registered first; then what each event counter gains is registered (``gain``: the counts,
    and for ``energy_fj`` their cost from the configuration's energy table, the same ``event_costs`` the
    golden model uses, tables of constants on the registered events and an adder tree, in ``pending``);
    then the gains are added to the counters. The value of an event
    counter in cycle t therefore includes the events of every cycle before t - 1.

    Storage: an event counter is a narrow *delta* register plus a ``counter_bits`` slot in a memory (LUT
    RAM on an FPGA) whose rows are laid out like the readout beats (``per_row`` = ``bus_bytes // 8``
    counters a row, at least one): its value is slot + delta + gain. One read-add-write port, visiting one
    row a cycle in turn, moves the deltas into the row, each restarting with its gain of that cycle (the
    *flush*: one adder between registers, the delta, and the memory).
    A delta is sized for the most its counter can gain between two times it is emptied.

    Readout (``readout``, from the ST unit): in the running cycle that ``sample``s, the flush takes row 0
    and every other delta with its gain moves into a held copy (``held_delta``) and starts over;
    ``cycles`` and ``stall_cycles`` are read from marks, copies that follow their registers one cycle late
    and stop from that cycle to the end of the readout (so they keep the value of the cycle before, as a
    COUNTERS command needs). While ``held``, the flush adds the held copies instead, row 1 onwards, each
    row once and at most one row ahead of the row that ``sel`` reads, so that every row holds its sampled
    values when the ST unit's beats (in order, ``sel`` 0, 1, ...) reach it; the deltas wait. ``beat`` is
    always the memory row of ``sel`` (and the marks), with no adder: it is exact while ``held`` (in beat
    order), and while ``settled``: no event in the pipeline, every delta flushed (at most ``rows + 2``
    cycles after the last event), and the core inactive since the cycle before (so the marks have caught
    up), which is what the drivers and the host link's STATUS reply read when the NPU is idle.
    ``int4_macs`` counts the MACs of rows done in a4w4 (always 0 without a4w4 in ``config.precisions``).
    Without ``config.energy_counter``, ``energy_fj`` reads 0 and the drivers derive it from the event
    counters (``golden.model.derive_energy``).

    Members
    -------
    run, active, stall : In(1)
        ``run``: the core's clock enable this cycle (a register, ``hdl/top.py``).
    events : In(Events)
    readout : In(counter_readout_signature(config))
    settled : Out(1)
    ready : Out(1)
        Low for the first ``rows`` cycles after reset (15 with ``bus_bytes`` <= 8), while the memory is
        cleared: no command may start.
    """

    #: Counters held in registers, whose values include the cycle before the current one.
    LIVE = ("cycles", "stall_cycles")

    def __init__(self, config: NpuConfig):
        self._config = config
        super().__init__({"run": In(1), "active": In(1), "stall": In(1), "events": In(Events),
                          "readout": In(counter_readout_signature(config)), "settled": Out(1),
                          "ready": Out(1)})

    def max_gain(self) -> dict:
        """The most each counter can gain in one cycle: a row of the array's MACs (two per PE in a4w4),
        every other event field at its largest count (``Events`` widths) times its factor, and their
        energy."""
        c = self._config
        cost, cost_int4 = event_costs(c), event_costs(c, Precision.A4W4)
        macs = c.rows * c.cols * (2 if "a4w4" in c.precisions else 1)
        gain = {name: ((1 << len(field)) - 1) * factor
                for name, (field, factor) in costed_events(Signal(Events), c).items()}
        energy = (max(macs * cost["macs"], macs * cost_int4["macs"])
                  + sum(g * cost[name] for name, g in gain.items())) if c.energy_counter else 0
        return {"cycles": 1, "stall_cycles": 1, "busy_cycles": 1, "macs": macs,
                "int4_macs": macs if "a4w4" in c.precisions else 0, **gain, "energy_fj": energy}

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bits = c.counter_bits
        n = len(COUNTER_NAMES)
        index = {name: i for i, name in enumerate(COUNTER_NAMES)}
        ro = self.readout
        sample = ro.sample & self.run

        # cycles / stall_cycles: registers; ``mark`` holds the value of the last running cycle, frozen
        # from the sampling cycle to the end of the readout.
        live, mark = {}, {}
        for name, inc in (("cycles", self.active), ("stall_cycles", self.stall)):
            live[name], mark[name] = Signal(bits, name=name), Signal(bits, name=f"{name}_mark")
            with m.If(inc):
                m.d.sync += live[name].eq(live[name] + 1)
            with m.If(self.run & ~sample & ~ro.held):
                m.d.sync += mark[name].eq(live[name])

        # Stage 1: the events of a running cycle.
        # (``macs`` and ``int4_macs`` describe a row: kept only with one, so that no row means all zero.)
        ev, counted = Signal(Events), Signal(Events)
        int4 = self.events.int4_macs if "a4w4" in c.precisions else C(0)
        m.d.comb += [counted.eq(self.events),
                     counted.macs.eq(Mux(self.events.row, self.events.macs, 0)),
                     counted.int4_macs.eq(self.events.row & int4)]
        m.d.sync += ev.eq(Mux(self.run, counted, 0))
        # Stage 2: what each event counter gains, registered (``gain``): the counts, and for ``energy_fj``
        # the cost of all the events (the configuration's energy table, the same ``event_costs`` the golden
        # model uses) in ``pending``: tables on the registered events and an adder tree, no multiplier.
        # Stage 3 adds the gains to the deltas.
        most = self.max_gain()
        counts = {"busy_cycles": ev.row, "macs": ev.macs, "int4_macs": Mux(ev.int4_macs, ev.macs, 0),
                  **{name: field * factor for name, (field, factor) in costed_events(ev, c).items()}}
        gain = {}
        for name, count in counts.items():
            if most[name]:
                gain[name] = Signal(range(most[name] + 1), name=f"{name}_gain")
                m.d.sync += gain[name].eq(count)
        pending = Signal(range(most["energy_fj"] + 1))
        if c.energy_counter:
            cost, cost_int4 = event_costs(c)["macs"], event_costs(c, Precision.A4W4)["macs"]
            # (``macs`` holds at most ``most["macs"]``. With a4w4, a row's MACs all cost the cheaper
            # precision's cost, and the MACs of the dearer precision the difference on top.)
            macs = ev.macs[:most["macs"].bit_length()]
            mac_costs = [(macs, cost)]
            if "a4w4" in c.precisions:
                dearer = Mux(ev.int4_macs, macs, 0) if cost_int4 > cost else Mux(ev.int4_macs, 0, macs)
                mac_costs = [(macs, min(cost, cost_int4)), (dearer, abs(cost - cost_int4))]
            m.d.sync += pending.eq(_cost_sum(
                mac_costs + [(field, factor * event_costs(c)[name])
                             for name, (field, factor) in costed_events(ev, c).items()]))
            gain["energy_fj"] = pending

        # The memory: row ``r`` holds counters ``r * per_row`` onwards (as many as a readout beat of
        # ``bus_bytes >= 8`` holds, else one), ``per_row * counter_bits`` bits; a readout beat is one row
        # (or a part of one), with no logic but the live counters between the memory and ``beat``.
        per_row = max(1, c.bus_bytes // 8)
        rows = -(-n // per_row)
        beats = c.beats(COUNTER_BEATS_BYTES)
        row_of = {name: index[name] // per_row for name in COUNTER_NAMES}
        # Deltas, sized for the most a counter gains between two times it is emptied (by a flush of its
        # row, or into its held copy by a sample): a flush round takes ``rows + 1`` cycles; a held readout
        # lasts ``beats`` running cycles (the normal flush waits), and a frozen core still gains in the
        # three pipeline cycles after its last running cycle (twice that, as a margin).
        window = 2 * (rows + beats + 4)
        deltas = {name: Signal(min(bits, max(1, (g * window).bit_length())), name=f"{name}_delta")
                  for name, g in most.items() if g and name not in self.LIVE}
        # (Row 0 is flushed in the sampling cycle itself, so its counters need no held copy.)
        held_delta = {name: Signal.like(d, name=f"{name}_held") for name, d in deltas.items() if row_of[name]}
        m.submodules.words = words = memory.Memory(shape=unsigned(per_row * bits), depth=rows, init=[])
        flush_rd, first_rd = words.read_port(domain="comb"), words.read_port(domain="comb")
        wr = words.write_port()
        # The flush: a row read, its deltas added, written back, one row a cycle. The pointer ``p`` runs
        # over the rows; in a sampling cycle the flush takes row 0 instead. During a held readout it adds
        # the held copies instead (``p`` from row 1, each row once, at most one row ahead of the row being
        # read, ``row``), so each row holds its sampled values when the readout reaches it; the deltas
        # then wait. After the readout ``p`` is ``rows`` (nothing left) and the next cycle starts over.
        row = Signal(range(rows))
        m.d.comb += row.eq((ro.sel * c.bus_bytes)[3:] // per_row)
        p = Signal(range(rows + 1))
        fp = Mux(sample, 0, p)
        write = Signal()
        m.d.comb += write.eq((fp < rows) & (~ro.held | (p <= row + 1)))
        # After reset the flush first writes zero into every row (memories have no reset): ``clearing``
        # for the first ``rows`` cycles, during which ``ready`` is low and the NPU takes no command.
        clearing = Signal(init=1)
        with m.If(clearing & (p == rows - 1)):
            m.d.sync += clearing.eq(0)
        m.d.comb += self.ready.eq(~clearing)
        p_next = Signal.like(p)
        with m.If(sample):
            m.d.comb += p_next.eq(1)
        with m.Elif(ro.held):
            m.d.comb += p_next.eq(Mux(write, p + 1, p))
        with m.Else():
            m.d.comb += p_next.eq(Mux(p >= rows - 1, 0, p + 1))
        # ``at_p``: ``p`` one-hot (bit r: ``p == r``; none once ``p`` is ``rows``), a register of its own,
        # so that each row's selection is one flip-flop, not a decoder on ``p``.
        at_p = Signal(rows, init=1)
        m.d.sync += [p.eq(p_next), at_p.eq(Cat(p_next == r for r in range(rows)))]

        def row_slots(values: dict, r):
            """The slots of row ``r``: ``values[name]`` for the counters in it, 0 elsewhere."""
            def slot(i):
                value = values.get(COUNTER_NAMES[i], C(0, bits)) if i < n else C(0, bits)
                return Cat(value, C(0, bits - len(value)))
            return Cat(*(slot(r * per_row + q) for q in range(per_row)))

        def row_p(values: dict):
            """``row_slots(values, p)``: an OR of the rows, each gated by its bit of ``at_p``."""
            selected = [Mux(at_p[r], row_slots(values, r), 0) for r in range(rows)]
            while len(selected) > 1:
                selected = [a | b for a, b in zip(selected[::2], selected[1::2])] + selected[len(selected) & ~1:]
            return selected[0]

        # A counter's delta with this cycle's gain (what a sample holds and flushes into row 0); a sample
        # empties it, a flush of its row takes the delta and leaves the gain.
        total = {name: Signal.like(d, name=f"{name}_total") for name, d in deltas.items()}
        for name, d in deltas.items():
            m.d.comb += total[name].eq(d + gain[name])
            with m.If(sample):
                m.d.sync += d.eq(0)
            with m.Elif(~ro.held & (p == row_of[name])):
                m.d.sync += d.eq(gain[name])
            with m.Else():
                m.d.sync += d.eq(total[name])
        with m.If(sample):
            m.d.sync += [held_delta[name].eq(total[name]) for name in held_delta]
        # The flush's sums for row ``p`` (read by ``flush_rd``) and for row 0 (``first_rd``), which a
        # sampling cycle flushes instead: ``sample`` only picks one of the two, after the adders.
        def flushed(slots, added):
            return Cat(*((Mux(clearing, 0, slots.word_select(q, bits)) + added.word_select(q, bits))[:bits]
                         for q in range(per_row)))
        sum_p = flushed(flush_rd.data, Mux(ro.held, row_p(held_delta), row_p(deltas)))
        sum_0 = flushed(first_rd.data, row_slots(total, 0))
        m.d.comb += [flush_rd.addr.eq(p), first_rd.addr.eq(0), wr.addr.eq(fp), wr.en.eq(write),
                     wr.data.eq(Mux(sample, sum_0, sum_p))]
        # (A cycle after the last active one, ``mark`` has caught up with ``cycles`` and ``stall_cycles``:
        # the core is not frozen in a cycle after an inactive one, hdl/top.py.)
        was_active = Signal()
        m.d.sync += was_active.eq(self.active)
        m.d.comb += self.settled.eq(~clearing & ~was_active & (ev.as_value() == 0)
                                    & ~Cat(*gain.values(), *deltas.values()).any())

        # The readout: row ``row`` (the part of it that beat ``sel`` holds), the live counters from their marks.
        rd = words.read_port(domain="comb")
        m.d.comb += rd.addr.eq(row)
        slots = []
        for q in range(per_row):
            value = Signal(bits, name=f"value{q}")
            m.d.comb += value.eq(rd.data.word_select(q, bits))
            for name in self.LIVE:
                if index[name] % per_row == q:
                    with m.If(row == row_of[name]):
                        m.d.comb += value.eq(mark[name])
            slots.append(Cat(value, C(0, 64 - bits)))
        word = Cat(*slots)
        if c.bus_bytes < 8:
            word = word.word_select(ro.sel[:(8 // c.bus_bytes).bit_length() - 1], 8 * c.bus_bytes)
        m.d.comb += ro.beat.eq(word)
        return m
