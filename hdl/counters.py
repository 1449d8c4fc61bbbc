"""Hardware performance counters, including the ``energy_fj`` accumulator."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import Precision
from opennpu.golden.model import event_costs
from opennpu.golden.program import COUNTER_NAMES

__all__ = ["Events", "Counters", "counters_layout"]


def counters_layout(config: NpuConfig) -> data.ArrayLayout:
    """Every counter, ``config.counter_bits`` wide, in ``COUNTER_NAMES`` order."""
    return data.ArrayLayout(unsigned(config.counter_bits), len(COUNTER_NAMES))


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


def _costed_events(ev, config: NpuConfig) -> dict:
    """The event counters that cost energy apart from MACs: ``{name: (event field, factor)}``, the counter
    adding ``field * factor`` per cycle (``golden.model.event_costs`` names)."""
    return {"act_reads": (ev.act_reads, 1), "act_writes": (ev.act_writes, 1), "wgt_reads": (ev.wgt_reads, 1),
            "wgt_writes": (ev.wgt_writes, 1), "acc_reads": (ev.acc_reads, 1), "acc_writes": (ev.acc_writes, 1),
            "dma_in_bytes": (ev.beat_in, config.bus_bytes), "dma_out_bytes": (ev.beat_out, config.bus_bytes),
            "act_ops": (ev.act_row, config.cols)}


def _scaled(field, constant: int):
    """``field * constant`` for a narrow unsigned ``field``, as a table of constants (no multiplier)."""
    return Array(C(i * constant) for i in range(1 << len(field)))[field]


def _balanced_sum(terms: list):
    """The sum of ``terms`` as a balanced tree of adders (depth log2 of their number, not their number)."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


class Counters(wiring.Component):
    """``config.counter_bits``-wide counters in ``COUNTER_NAMES`` order; they wrap like the golden model's.

    ``cycles`` += ``active`` and ``stall_cycles`` += ``stall`` every cycle; their values include every
    cycle before the current one. The events of each running (``run``) cycle go through a pipeline:
    registered first (with the MACs' energy, a multiply), then added to each event counter while their
    cost (from the configuration's energy table, the same ``event_costs`` the golden model uses) is
    registered, then that cost is added to the energy total. The event counters and ``energy_fj``
    (total + registered cost) read in cycle t therefore include the events of every cycle before t - 1:
    two cycles of latency, and no path runs from the units' event logic into a counter adder, from a
    multiply into the cost sum or from the cost sum into the total. ``int4_macs`` counts the MACs of
    rows done in a4w4 (constant 0 without a4w4 in ``config.precisions``). Without
    ``config.energy_counter`` there is no multiply, cost sum or total: ``energy_fj`` reads 0 and the
    drivers derive it from the event counters (``golden.model.derive_energy``).
    ``settled``: no event is in the pipeline (every value is final).

    ``snapshot``: what a COUNTERS command dispatched in the previous running cycle d samples in the
    next running cycle (``hdl/store_unit.py``): the event counters as they are (every event before d,
    since nothing happens in d itself) and ``cycles`` / ``stall_cycles`` as they were in d (registered
    in every running cycle). So no snapshot register is loaded by the dispatch decision itself.

    Members
    -------
    run, active, stall : In(1)
        ``run``: the core's clock enable this cycle (a register, ``hdl/top.py``).
    events : In(Events)
    values, snapshot : Out(ArrayLayout(unsigned(counter_bits), len(COUNTER_NAMES)))
    settled : Out(1)
    """

    #: Counters whose values include the cycle before the current one (the rest lag one more cycle).
    LIVE = ("cycles", "stall_cycles")

    def __init__(self, config: NpuConfig):
        self._config = config
        layout = counters_layout(config)
        super().__init__({"run": In(1), "active": In(1), "stall": In(1), "events": In(Events),
                          "values": Out(layout), "snapshot": Out(layout), "settled": Out(1)})

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bits = c.counter_bits
        value = {name: self.values[i] for i, name in enumerate(COUNTER_NAMES)}
        with m.If(self.active):
            m.d.sync += value["cycles"].eq(value["cycles"] + 1)
        with m.If(self.stall):
            m.d.sync += value["stall_cycles"].eq(value["stall_cycles"] + 1)

        # Stage 1: the events of a running cycle.
        # (``macs`` and ``int4_macs`` describe a row: kept only with one, so that no row means all zero.)
        ev, counted = Signal(Events), Signal(Events)
        int4 = self.events.int4_macs if "a4w4" in c.precisions else C(0)
        m.d.comb += [counted.eq(self.events),
                     counted.macs.eq(Mux(self.events.row, self.events.macs, 0)),
                     counted.int4_macs.eq(self.events.row & int4)]
        m.d.sync += ev.eq(Mux(self.run, counted, 0))
        m.d.comb += self.settled.eq(ev.as_value() == 0)
        # Stage 2: the event counters add them.
        increments = {"busy_cycles": ev.row, "macs": ev.macs, "int4_macs": Mux(ev.int4_macs, ev.macs, 0),
                      **{name: field * factor for name, (field, factor) in _costed_events(ev, c).items()}}
        for name, inc in increments.items():
            m.d.sync += value[name].eq(value[name] + inc)
        if c.energy_counter:
            # The MACs' energy (a multiply, in a DSP block) is computed in stage 1, beside the register;
            # stage 2 registers the cost of the events in ``pending``; stage 3 adds it to the total.
            cost, cost_int4 = event_costs(c), event_costs(c, Precision.A4W4)
            mac_energy = Signal(bits)
            m.d.sync += mac_energy.eq(Mux(self.run, counted.macs * Mux(counted.int4_macs, cost_int4["macs"],
                                                                       cost["macs"]), 0))
            # Each event's cost from a table on its (1- or 2-bit) count, no multiplier; a balanced sum.
            energy = _balanced_sum([_scaled(field, factor * cost[name])
                                    for name, (field, factor) in _costed_events(ev, c).items()] + [mac_energy])
            total, pending = Signal(bits), Signal(bits)
            m.d.sync += [pending.eq(energy), total.eq(total + pending)]
            m.d.comb += value["energy_fj"].eq(total + pending)

        for i, name in enumerate(COUNTER_NAMES):
            if name in self.LIVE:
                mark = Signal(bits, name=f"{name}_mark")
                with m.If(self.run):
                    m.d.sync += mark.eq(value[name])
                m.d.comb += self.snapshot[i].eq(mark)
            else:
                m.d.comb += self.snapshot[i].eq(value[name])
        return m
