"""The formal proof harnesses, one ``wiring.Component`` (one SymbiYosys job) per proved property.

Each harness instantiates the unit under proof, leaves its inputs free (they are the harness's own
``In`` members, so the solver chooses them every cycle), constrains them with ``Assume`` only where the
property is about a well-behaved environment, and checks ``Assert`` statements from the outside: no
assertion is added to the production RTL. Past values are kept in the harness's own registers.
Everything starts from the reset state (the registers' ``init`` values) and ``rst`` is held low.

``PROOFS`` lists each job with its configuration, mode and depth (``synth/formal.run_proof`` runs one);
``tests/test_formal.py`` runs them. The configurations are small (``SMALL_CONFIG``: a 2x2 array, SRAMs
of a few words, 16-bit counters) so that the solver's state stays small.
"""
from __future__ import annotations

from amaranth import *
from amaranth.hdl import Assert, Assume
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In

from opennpu.config import NpuConfig
from opennpu.golden.program import COUNTER_NAMES
from opennpu.golden.timing import ACT_LATENCY, array_latency
from opennpu.hdl.counters import Counters, Events
from opennpu.hdl.decoder import select_code
from opennpu.hdl.dispatcher import UnitStart

__all__ = ["SMALL_CONFIG", "LINK_CONFIG", "LINK_FRAME_MAX", "PROOFS", "CountersMonotonic", "NpuStreamRules",
           "RejectedWritesNothing", "WritesInRange", "LinkStreamRules", "LinkDelivery",
           "CrcSerial", "CrcResidue"]

#: The configuration of the NPU proofs: 2x2 int8, SRAMs of 4 / 4 / 2 words, 16-bit counters.
SMALL_CONFIG = NpuConfig(rows=2, cols=2, act_depth=4, wgt_depth=4, acc_depth=2, counter_bits=16,
                         energy_counter=False)


def _no_reset(m):
    m.d.comb += Assume(~ResetSignal("sync"))


class CountersMonotonic(wiring.Component):
    """``hdl/counters.py``: an exact readout of a counter is never below an earlier exact readout of it,
    unless it wraps at ``counter_bits``.

    The counters keep each event counter as a memory slot plus a delta (flushed in turn), so a readout
    is exact while ``readout.held`` (a COUNTERS snapshot, in the ST unit's beat order) or ``settled``; the
    harness drives ``sel`` (one whole counter per beat: ``bus_bytes`` 8), ``sample`` and ``held`` freely
    (out of beat order a held readout of a row that the held copies have not reached yet shows its slot
    without them, which is below the sampled value but not below an earlier exact readout), with the rules the ST unit
    keeps (``sample`` only outside a held readout and once ``ready``, a held readout only right after
    a ``sample`` or another held cycle), and every ``run`` / ``active`` / ``stall`` and ``Events`` input unconstrained.
    At each exact readout of the counter read at the previous exact readout, the value either grows or
    stays, or the earlier one was within the counter's largest gain between the two readouts of
    ``2^counter_bits`` (the harness bounds that gap: at most ``GAP`` cycles apart). BMC from reset, to the
    depth in ``PROOFS``.
    """

    #: exact readouts further apart than this many cycles are not compared (the gain bound grows with it)
    GAP = 24

    def __init__(self, config: NpuConfig):
        self._config = config
        self.dut = Counters(config)
        super().__init__({"run": In(1), "active": In(1), "stall": In(1), "events": In(Events),
                          "sel": In(range(config.beats(8 * len(COUNTER_NAMES)))), "sample": In(1),
                          "held": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        _no_reset(m)
        assert self._config.bus_bytes == 8, "one counter per readout beat"
        # As the ST unit does: a held readout follows a sample in a running cycle and lasts while the
        # ``held`` input stays high; no sample during it, nor before ``ready`` (no command runs then).
        held = Signal()
        start = self.sample & ~held & dut.ready
        m.d.sync += held.eq(Mux(held, self.held, start & self.run))
        ro = dut.readout
        m.d.comb += [dut.run.eq(self.run), dut.active.eq(self.active), dut.stall.eq(self.stall),
                     dut.events.eq(self.events), ro.sel.eq(self.sel), ro.sample.eq(start), ro.held.eq(held),
                     Assume(self.events.macs <= dut.max_gain()["macs"])]
        exact = ro.held | dut.settled
        prev, prev_sel, seen = Signal(64), Signal.like(self.sel), Signal()
        age = Signal(range(self.GAP + 1))
        with m.If(exact & (self.sel < len(COUNTER_NAMES))):
            m.d.sync += [prev.eq(ro.beat), prev_sel.eq(self.sel), seen.eq(1), age.eq(0)]
        with m.Elif(age < self.GAP):
            m.d.sync += age.eq(age + 1)
        with m.Else():
            m.d.sync += seen.eq(0)
        top = (1 << self._config.counter_bits) - 1
        bounds = dut.max_gain()
        for i, name in enumerate(COUNTER_NAMES):
            limit = top - bounds[name] * (self.GAP + 2)
            ok = (ro.beat >= prev) | (prev > limit) if limit >= 0 else C(1)
            with m.If(seen & exact & (self.sel == i) & (prev_sel == i)):
                m.d.comb += Assert(ok, f"counter {name} decreased")
        return m


def _free_inputs(dut, sinks, sources, plain):
    """Harness members for ``dut``'s inputs: ``<s>_valid`` / ``<s>_payload`` of each stream it takes
    (``sinks``), ``<s>_ready`` of each stream it gives (``sources``), and the ``plain`` input ports."""
    members = {}
    for name in sinks:
        sig = dut.signature.members[name].signature
        members[f"{name}_valid"] = In(1)
        members[f"{name}_payload"] = In(sig.members["payload"].shape)
    for name in sources:
        members[f"{name}_ready"] = In(1)
    for name in plain:
        members[name] = In(dut.signature.members[name].shape)
    return members


def _drive_free_inputs(m, harness, dut, sinks, sources, plain):
    for name in sinks:
        port = getattr(dut, name)
        m.d.comb += [port.valid.eq(getattr(harness, f"{name}_valid")),
                     port.payload.eq(getattr(harness, f"{name}_payload"))]
    for name in sources:
        m.d.comb += getattr(dut, name).ready.eq(getattr(harness, f"{name}_ready"))
    for name in plain:
        m.d.comb += getattr(dut, name).eq(getattr(harness, name))


def _stream_holds(m, port, name, *, exempt=C(0)):
    """Assert the valid/ready rule on a stream ``port`` (the driver's side): once ``valid`` is high and
    the beat is not taken, ``valid`` and ``payload`` are the same in the next cycle (unless ``exempt``
    was high in the cycle of the offer, e.g. a reset pulse)."""
    held = Signal(name=f"{name}_held")
    payload = Signal.like(port.payload, name=f"{name}_prev_payload")
    m.d.sync += [held.eq(port.valid & ~port.ready & ~exempt), payload.eq(port.payload)]
    m.d.comb += Assert(~held | port.valid, f"{name}: valid dropped before the beat was taken")
    m.d.comb += Assert(~held | (Value.cast(port.payload) == Value.cast(payload)),
                       f"{name}: payload changed before the beat was taken")


def _assume_stream_holds(m, port, name):
    """The same rule as an assumption on a stream the harness drives (the environment behaves)."""
    held = Signal(name=f"{name}_held")
    payload = Signal.like(port.payload, name=f"{name}_prev_payload")
    m.d.sync += [held.eq(port.valid & ~port.ready), payload.eq(port.payload)]
    m.d.comb += Assume(~held | (port.valid & (Value.cast(port.payload) == Value.cast(payload))))


class NpuStreamRules(wiring.Component):
    """``NpuTop``'s data-out stream keeps the valid/ready rule: once ``dout.valid`` is high, ``valid``
    and ``payload`` hold until the host takes the beat (``dout.ready``).

    The command and data-in streams and ``dout.ready`` are left completely free (no assumption on the
    host: any command words, any data, any back-pressure); the whole NPU (``SMALL_CONFIG``) runs behind
    them. BMC from reset: 10 cycles in the default suite, 40 in the slow one (several commands, each
    STORE / ACTIVATE-to-host / COUNTERS push included). k-induction does not close: the data-out FIFO's
    pointers have unreachable values that the induction step may start from.
    """

    def __init__(self, config: NpuConfig):
        from opennpu.hdl.top import NpuTop
        self.dut = NpuTop(config)
        super().__init__(_free_inputs(self.dut, ["cmd", "din"], ["dout"], ["counter_sel"]))

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        _no_reset(m)
        _drive_free_inputs(m, self, dut, ["cmd", "din"], ["dout"], ["counter_sel"])
        _stream_holds(m, dut.dout, "dout")
        return m


#: The host-link proofs' configuration: one command (16 bytes) and one data-in beat (``bus_bytes`` = 16)
#: per frame at the smallest frame buffer (``LINK_FRAME_MAX`` = 16), so every delivered frame is
#: exactly one beat on its stream.
LINK_CONFIG = NpuConfig(rows=2, cols=2, act_depth=4, wgt_depth=4, acc_depth=2, bus_bytes=16, counter_bits=16,
                        energy_counter=False)
LINK_FRAME_MAX = 16
_LINK_SINKS, _LINK_SOURCES = ["rx", "dout"], ["tx", "cmd", "din"]
_LINK_PLAIN = ["npu_status", "counter_beat", "rx_overrun", "rx_framing_error"]


def _crc32_byte(crc, byte):
    """The (un-inverted) CRC-32/IEEE register after ``byte``: ``zlib.crc32``'s bytewise update."""
    from opennpu.golden.link import CRC_POLY
    for i in range(8):
        crc = (crc >> 1) ^ Mux(crc[0] ^ byte[i], CRC_POLY, 0)
    return crc[:32]


def _host_link(config=LINK_CONFIG, frame_max=LINK_FRAME_MAX):
    """The link of the link proofs: its receive CRC register bytewise (a byte per cycle; ``CrcSerial``)."""
    from opennpu.hdl.host_link import HostLink
    return HostLink(config, frame_max=frame_max, serial_crc=False)


class CrcSerial(wiring.Component):
    """``hdl/host_link.Crc32``'s bit-serial register (the link's default) agrees with the bytewise
    update of CRC-32 (``zlib.crc32``, written here from the polynomial): whenever it is ready, its value
    is the bytewise register over the same bytes. So the bytewise register that ``LinkDelivery`` and
    ``LinkStreamRules`` run the link with computes what the board's serial one does; the two links
    differ only in when they take a byte (the serial one at most every 9 cycles) and in how long the
    CRC check of a frame's last byte lasts (1 cycle or up to 8), which these BMCs do not cover for the
    serial link. Every input free (bytes, ``valid``, ``clear``).
    k-induction with k = 17: in an unreachable start state the 4-bit count of bits still to shift can
    hold up to 15, so a window of 17 states holds a ready state or the cycle that took the byte."""

    def __init__(self):
        from opennpu.hdl.host_link import Crc32
        self.dut = Crc32(serial=True)
        super().__init__({"i_valid": In(1), "i_payload": In(8), "clear": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        _no_reset(m)
        m.d.comb += [dut.i.valid.eq(self.i_valid), dut.i.payload.eq(self.i_payload), dut.clear.eq(self.clear)]
        ref = Signal(32, init=0xFFFFFFFF)
        with m.If(dut.i.ready & self.clear):
            m.d.sync += ref.eq(0xFFFFFFFF)
        with m.Elif(dut.i.ready & self.i_valid):
            m.d.sync += ref.eq(_crc32_byte(ref, self.i_payload))
        m.d.comb += Assert(~dut.i.ready | (dut.value == ref), "the serial CRC register is not the bytewise one")
        return m


class CrcResidue(wiring.Component):
    """The frame check by residue (the link runs its CRC over the frame's four CRC bytes too and
    compares the register with ``CRC_RESIDUE``) accepts exactly the frames whose CRC bytes are
    ``zlib.crc32`` of the rest: for every register value ``c`` after the payload and every four
    received bytes ``t``, the register after ``t`` is ``CRC_RESIDUE`` if and only if ``t == ~c``
    (little-endian). Combinational; one step."""

    def __init__(self):
        super().__init__({"c": In(32), "t": In(32)})

    def elaborate(self, platform):
        from opennpu.golden.link import CRC_RESIDUE
        m = Module()
        reg = self.c
        for k in range(4):
            after = Signal(32, name=f"after{k}")       # a signal per byte: no 2^32-node expression
            m.d.comb += after.eq(_crc32_byte(reg, self.t.word_select(k, 8)))
            reg = after
        m.d.comb += Assert((reg == CRC_RESIDUE) == (self.t == ~self.c), "the residue check is not the CRC compare")
        return m


class LinkStreamRules(wiring.Component):
    """``HostLink``'s output streams keep the valid/ready rule: ``tx`` (bytes to the UART), ``cmd`` and
    ``din`` (beats to the NPU) hold ``valid`` and ``payload`` until taken. Every input is free (any
    received bytes, any back-pressure, any NPU status); ``cmd`` / ``din`` are exempt in the cycle of
    ``npu_reset`` (the NPU and the drains are reset then). ``LINK_CONFIG``, ``frame_max`` 16, the
    bytewise receive CRC register as in ``LinkDelivery`` (the transmitter is the link's own).
    BMC from reset: 45 cycles in the default suite (``tx``: the first bytes of a NAK for a bad
    header, the earliest reply), 64 in the slow one (a 25-byte frame received, checked and its beat
    presented from cycle 58; replies on ``tx``). k-induction does not close (unreachable drain /
    buffer-state combinations)."""

    def __init__(self, config=LINK_CONFIG, frame_max=LINK_FRAME_MAX):
        self.dut = _host_link(config, frame_max)
        super().__init__(_free_inputs(self.dut, _LINK_SINKS, _LINK_SOURCES, _LINK_PLAIN))

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        _no_reset(m)
        _drive_free_inputs(m, self, dut, _LINK_SINKS, _LINK_SOURCES, _LINK_PLAIN)
        _stream_holds(m, dut.tx, "tx")
        _stream_holds(m, dut.cmd, "cmd", exempt=dut.npu_reset)
        _stream_holds(m, dut.din, "din", exempt=dut.npu_reset)
        return m


class LinkDelivery(wiring.Component):
    """``HostLink`` delivers every frame at most once, in sequence order, and never one whose CRC failed.

    At byte level: the received bytes are free (any byte in any cycle the link takes one). Beside the
    link runs a reference receiver written from the protocol of ``golden/link.py`` (not from the RTL):
    it hunts for ``SYNC``, reads the header, runs CRC-32 bytewise (as ``zlib.crc32`` defines it) over
    the frame and its four CRC bytes and checks the residue (``CrcResidue`` proves that this accepts
    exactly the frames whose CRC bytes are ``zlib.crc32`` of the rest), and keeps per stream the last
    accepted sequence number and whether an accepted frame is still undelivered (``pending``, cleared
    when its beat is taken). A frame is accepted only with a good CRC, ``SEQ == last + 1`` and its
    stream's previous frame delivered when its header arrived (else ``NAK BUSY``); ``RESET`` starts the
    numbers over. Asserted in every cycle (but that of ``npu_reset``): a beat offered on ``cmd`` /
    ``din`` belongs to a pending accepted frame and carries exactly its payload (and, on ``cmd``,
    ``last`` exactly for ``CMD_LAST``). With one beat per frame (``LINK_CONFIG``, ``frame_max`` 16)
    taking that beat clears ``pending``, so no frame is delivered twice, none out of order (the next is
    accepted only after it) and none whose CRC failed.

    The link runs with its bytewise receive CRC register (``serial_crc=False``: a byte per cycle, so a
    25-byte frame is in after 25 cycles instead of 225; ``CrcSerial`` proves the serial register equal
    to the bytewise update). A lemma is asserted too: the link's CRC register equals the reference's
    whenever it is ready; since the BMC assumes in later steps what it proved in earlier ones, no step
    has to reason about more than one byte's CRC update.

    Not covered: the mid-frame ``timeout`` (the default, 2^20 cycles, is beyond any proof depth here);
    liveness (that a good frame is delivered at all). BMC from reset: 20 cycles in the default suite
    (no frame can complete that early: a smoke test of the harness), 62 in the slow one: the earliest
    beat of a frame (a 25-byte CMD_LAST frame, bytes back to back) is offered in cycle 58 (the frame
    received, checked, drained from its buffer at 2 cycles a byte), so the beats offered in cycles
    58-61 are checked. A second frame on a stream (a repeat, one out of sequence, a damaged one, or
    the next) would show a wrong decision only at its own beat, beyond
    the bound (about cycle 85). Solver time grows steeply past the first delivery (on a loaded
    2-core machine: 7 min to cycle 59, 11 min to 60, 26 min to 61; cycle 62 had not finished after
    7 more minutes).
    """

    def __init__(self, config=LINK_CONFIG, frame_max=LINK_FRAME_MAX, *, asserts=True):
        from opennpu.golden.link import FrameType
        assert config.bus_bytes == 16 and frame_max == 16, "the reference receiver assumes one beat per frame"
        self._ft = FrameType
        self._asserts = asserts           # False: only ``checks_hold`` (for simulation)
        self.dut = _host_link(config, frame_max)
        super().__init__(_free_inputs(self.dut, _LINK_SINKS, _LINK_SOURCES, _LINK_PLAIN))

    def elaborate(self, platform):
        from opennpu.golden.link import CRC_RESIDUE, SYNC
        ft = self._ft
        m = Module()
        m.submodules.dut = dut = self.dut
        _no_reset(m)
        _drive_free_inputs(m, self, dut, _LINK_SINKS, _LINK_SOURCES, _LINK_PLAIN)

        got = dut.rx.valid & dut.rx.ready
        byte = dut.rx.payload
        r_type, r_seq, r_len = Signal(8), Signal(8), Signal(16)
        r_idx, r_tail = Signal(5), Signal(2)
        r_buf, r_crc = Signal(128), Signal(32, init=0xFFFFFFFF)
        r_drop, r_good = Signal(), Signal()
        last = [Signal(8, init=0xFF, name=f"ref_last{s}") for s in range(2)]
        pending = [Signal(name=f"ref_pending{s}") for s in range(2)]
        frame = [Signal(128, name=f"ref_frame{s}") for s in range(2)]
        frame_last = Signal()
        ports = [dut.cmd, dut.din]
        is_stream = (r_type == ft.CMD) | (r_type == ft.CMD_LAST) | (r_type == ft.DATA)
        stream = r_type == ft.DATA

        def crc_add():
            m.d.sync += r_crc.eq(_crc32_byte(r_crc, byte))

        for s in range(2):                       # a beat taken: its frame is delivered
            with m.If(ports[s].valid & ports[s].ready):
                m.d.sync += pending[s].eq(0)

        def hunt():
            with m.If(got & (byte == SYNC)):
                m.d.sync += r_crc.eq(0xFFFFFFFF)
                m.next = "TYPE"
            with m.Else():
                m.next = "HUNT"

        with m.FSM(name="ref_fsm"):
            with m.State("HUNT"):
                hunt()
            for state, field, following in (("TYPE", r_type, "SEQ"), ("SEQ", r_seq, "LEN_LO")):
                with m.State(state):
                    with m.If(got):
                        crc_add()
                        m.d.sync += field.eq(byte)
                        m.next = following
            with m.State("LEN_LO"):
                with m.If(got):
                    crc_add()
                    m.d.sync += r_len[:8].eq(byte)
                    m.next = "LEN_HI"
            with m.State("LEN_HI"):
                with m.If(got):
                    crc_add()
                    total = Cat(r_len[:8], byte)
                    m.d.sync += [r_len.eq(total), r_idx.eq(0), r_tail.eq(0),
                                 r_drop.eq(Mux(stream, pending[1], pending[0]))]
                    is_ctrl = (r_type == ft.STATUS) | (r_type == ft.INFO) | (r_type == ft.RESET)
                    with m.If(is_stream & (total == 16)):
                        m.next = "PAYLOAD"
                    with m.Elif(is_ctrl & (total == 0)):
                        m.next = "CRC"
                    with m.Else():
                        m.next = "HUNT"
            with m.State("PAYLOAD"):
                with m.If(got):
                    crc_add()
                    m.d.sync += [r_buf.eq(Cat(r_buf[8:], byte)), r_idx.eq(r_idx + 1)]
                    with m.If(r_idx == 15):
                        m.next = "CRC"
            with m.State("CRC"):
                with m.If(got):
                    crc_add()
                    m.d.sync += r_tail.eq(r_tail + 1)
                    with m.If(r_tail == 3):
                        m.d.sync += r_good.eq(_crc32_byte(r_crc, byte) == CRC_RESIDUE)
                        m.next = "DECIDE"
            with m.State("DECIDE"):              # the link checks its CRC (no byte taken meanwhile)
                with m.If(dut.rx.ready):
                    with m.If(r_good):
                        with m.If(r_type == ft.RESET):
                            m.d.sync += [last[0].eq(0xFF), last[1].eq(0xFF), pending[0].eq(0), pending[1].eq(0)]
                        with m.Elif(is_stream):
                            for s in range(2):
                                with m.If((stream == s) & (r_seq == (last[s] + 1)[:8]) & ~r_drop):
                                    m.d.sync += [pending[s].eq(1), frame[s].eq(r_buf), last[s].eq(r_seq)]
                                    if s == 0:
                                        m.d.sync += frame_last.eq(r_type == ft.CMD_LAST)
                    hunt()

        conds = []
        for s, port in enumerate(ports):
            word = port.payload.word if s == 0 else port.payload
            offered = port.valid & ~dut.npu_reset
            conds += [(~offered | pending[s], f"stream {s}: a beat without an accepted frame"),
                      (~offered | (word == frame[s]), f"stream {s}: a beat that is not the frame's")]
            if s == 0:
                conds.append((~offered | (port.payload.last == frame_last), "cmd: wrong last flag"))
        # The lemma: whenever the link's receive CRC register is not shifting a byte in, it equals the
        # reference's register over the same bytes. Each step of the proof then needs only the last
        # byte's update (the BMC assumes what it proved in earlier steps), not the whole frame's CRC.
        crc = dut.rx_crc
        conds.append((~crc.i.ready | (crc.value == r_crc), "the link's receive CRC is not the frame's"))
        if self._asserts:
            m.d.comb += [Assert(cond, message) for cond, message in conds]
        # For simulating the harness (tests/test_formal.py): the reference's state, every check at once.
        self.ref_pending, self.ref_last, self.ref_frame = pending, last, frame
        self.checks_hold = Signal()
        m.d.comb += self.checks_hold.eq(Cat(cond for cond, _ in conds).all())
        return m


_NPU_SINKS, _NPU_SOURCES, _NPU_PLAIN = ["cmd", "din"], ["dout"], ["counter_sel"]


class _NpuHarness(wiring.Component):
    """A harness around ``NpuTop`` (``self.dut``) with every input free: ``_npu_module`` starts its
    ``elaborate`` (the NPU as a submodule, out of reset, inputs driven from the harness's members)."""

    def __init__(self, config: NpuConfig):
        from opennpu.hdl.top import NpuTop
        self.dut = NpuTop(config)
        super().__init__(_free_inputs(self.dut, _NPU_SINKS, _NPU_SOURCES, _NPU_PLAIN))

    def _npu_module(self) -> Module:
        m = Module()
        m.submodules.dut = self.dut
        _no_reset(m)
        _drive_free_inputs(m, self, self.dut, _NPU_SINKS, _NPU_SOURCES, _NPU_PLAIN)
        return m


def _sram_writes(top):
    """Every SRAM write port of the core (``hdl/controller.py`` wiring): (name, port)."""
    core = top.core
    return [("act_sram by LD", core.ld.act_wr), ("act_sram by ACT", core.wb.act_wr),
            ("wgt_sram by LD", core.ld.wgt_wr), ("acc_sram by EX", core.engine.acc_wr)]


class RejectedWritesNothing(_NpuHarness):
    """A rejected command writes no SRAM, bias, requantization, LUT or weight register.

    Two assertions on ``NpuTop`` (``SMALL_CONFIG``) with free data-in and back-pressure:

    - in every cycle, whatever the commands: a head command the dispatcher rejects (consumed with a
      nonzero checker code) sends no start pulse to any unit (the units only write after a start), except
      LD's with ``discard`` for a rejected command that takes data-in (LD consumes and drops it);
    - end to end: while every command the host sends is one the checker rejects (``Assume`` on the
      checker's code as the command enters, any word otherwise), no SRAM write port is enabled, the LUT
      is never written, the bias / requantization banks keep their reset values and the PRELOAD unit
      (the only writer of the PEs' weight registers) never becomes busy; the rejections do happen
      (``status.rejected`` counts them).

    BMC from reset: 8 cycles in the default suite, 30 in the slow one (a rejected command is consumed
    within 3 cycles of its beat, so several of them).
    """

    def elaborate(self, platform):
        m, dut = self._npu_module(), self.dut
        core = dut.core
        disp = core.dispatcher
        rejecting = disp.consume & (disp.head.error != 0)
        started = Value.cast(disp.start)
        dropping = Value.cast(UnitStart.const({"ld": 1, "discard": 1}))
        m.d.comb += Assert(~rejecting | (started == 0) | (started == dropping),
                           "a rejected command started a unit (other than LD discarding its data-in)")

        opcode = dut.cmd.payload.word[:4]
        all_bad = Cat(select_code(dut.config, opcode, core.cmd_codes[i]) != 0
                      for i in range(len(core.cmd_codes))).all()
        m.d.comb += Assume(~dut.cmd.valid | all_bad)
        for name, port in _sram_writes(dut):
            m.d.comb += Assert(~port.en, f"{name}: written while every command was rejected")
        m.d.comb += [Assert(~core.ld.lut_we, "LUT written while every command was rejected"),
                     Assert(Value.cast(core.ld.bias) == 0, "bias bank changed while every command was rejected"),
                     Assert(Value.cast(core.ld.multiplier) == 0, "requantization multipliers changed"),
                     Assert(Value.cast(core.ld.shift) == 0, "requantization shifts changed"),
                     Assert(~core.engine.pl_busy, "PRELOAD ran while every command was rejected")]
        return m


class WritesInRange(_NpuHarness):
    """No SRAM write falls outside the address range of the command that caused it.

    ``NpuTop`` (``SMALL_CONFIG``) with every input free (any command words, any data, any
    back-pressure). The harness decodes each command as the dispatcher starts it (``golden/isa.py``
    fields of the head word) and asserts, for every enabled SRAM write port:

    - LD (``LOAD``): ``addr <= address < addr + rows`` of the last LOAD started, into the SRAM its
      ``buf`` names (an act write only for ``buf`` act, a weight write only for ``buf`` wgt);
    - ACT (``ACTIVATE``): an act write only for ``dest`` act, inside ``aaddr .. aaddr + rows - 1`` of
      one of the last ``ACT_LATENCY + 2`` ACTIVATEs started (ACT reads one while the rows of earlier
      ones, each at least a row and a cycle apart, pass through the activation unit);
    - EX (``COMPUTE``): an accumulator write inside ``accaddr .. accaddr + rows - 1`` of one of the
      last ``array_latency + 3`` COMPUTEs started (the EX unit issues one while earlier ones drain,
      each at least a row and done ``array_latency + 2`` cycles after its last row issues).

    BMC from reset: 12 cycles in the default suite (a LOAD from its beat to its write), 31 in the slow
    one: the first accumulator write is reachable in step 24 (from there, three one-row COMPUTEs in
    flight break a tracker of the last two, as the one before the side-by-side drain had) and the first
    ACTIVATE's act SRAM write in step 29 (found by asserting that neither happens). Measured: 19 steps
    4 s, 27 steps 11 s, 31 steps 455 s while other jobs shared the 2 cores; 34 steps ended in a
    solver error after 761 s.
    """

    def elaborate(self, platform):
        from opennpu.golden.isa import Buf, Opcode
        from opennpu.hdl.decoder import command_layout
        m, dut = self._npu_module(), self.dut
        core = dut.core
        # A start pulse counts in a cycle the core runs (the units are frozen otherwise and the pulse
        # repeats): the counters' copy of the clock enable, a port of ``Counters``.
        start = Signal.like(core.dispatcher.start)
        m.d.comb += start.eq(Mux(dut.perf.run, core.dispatcher.start, 0))
        word = core.head.word
        opcode = word[:4]
        view = {op: data.View(command_layout(op), word) for op in (Opcode.LOAD, Opcode.ACTIVATE, Opcode.COMPUTE)}

        def inside(addr, base, rows):
            return (addr >= base) & (addr < base + rows)

        # LD: the last LOAD's range (other LD commands, LOAD_BIAS / LUT / QUANT, mark it empty).
        ld_base, ld_rows, ld_buf = Signal(16), Signal(16), Signal(2)
        with m.If(start.ld):
            is_load = opcode == Opcode.LOAD
            m.d.sync += [ld_base.eq(view[Opcode.LOAD].addr), ld_rows.eq(Mux(is_load, view[Opcode.LOAD].rows, 0)),
                         ld_buf.eq(view[Opcode.LOAD].buf)]
        ld = core.ld
        m.d.comb += [
            Assert(~ld.act_wr.en | ((ld_buf == Buf.ACT) & inside(ld.act_wr.addr, ld_base, ld_rows)),
                   "LD wrote the act SRAM outside its LOAD"),
            Assert(~ld.wgt_wr.en | ((ld_buf == Buf.WGT) & inside(ld.wgt_wr.addr, ld_base, ld_rows)),
                   "LD wrote the weight SRAM outside its LOAD"),
        ]
        # ACT: the destination ranges of the ACTIVATEs that may still write, newest first.
        act = view[Opcode.ACTIVATE]
        wb = [(Signal(16, name=f"wb{i}_base"), Signal(16, name=f"wb{i}_rows")) for i in range(ACT_LATENCY + 2)]
        with m.If(start.act):
            m.d.sync += [wb[0][0].eq(act.aaddr), wb[0][1].eq(Mux(act.dest == 0, act.rows, 0))]
            m.d.sync += [part.eq(older) for newer, prev in zip(wb[1:], wb) for part, older in zip(newer, prev)]
        in_act = 0
        for base, rows in wb:
            in_act = in_act | inside(core.wb.act_wr.addr, base, rows)
        m.d.comb += Assert(~core.wb.act_wr.en | in_act, "ACT wrote the act SRAM outside its ACTIVATE")
        # EX: the accumulator ranges of the COMPUTEs that may still write, newest first.
        comp = view[Opcode.COMPUTE]
        c = self.dut.config
        in_flight = array_latency(c.rows, c.cols) + 3
        ex = [(Signal(16, name=f"ex{i}_base"), Signal(16, name=f"ex{i}_rows")) for i in range(in_flight)]
        with m.If(start.ex):
            m.d.sync += [ex[0][0].eq(comp.accaddr), ex[0][1].eq(comp.rows)]
            m.d.sync += [part.eq(older) for newer, prev in zip(ex[1:], ex) for part, older in zip(newer, prev)]
        wr = core.engine.acc_wr
        hit = 0
        for base, rows in ex:
            hit = hit | inside(wr.addr, base, rows)
        m.d.comb += Assert(~wr.en | hit, "EX wrote the accumulator SRAM outside its COMPUTE")
        return m


#: Every proof job: name -> (harness factory, mode, default-suite depth, slow-suite depth). ``prove`` is
#: k-induction (the depth is k: the property holds in every reachable state); ``bmc`` checks every
#: trace from reset up to the depth in cycles. The slow depths cover at least one whole command (NPU:
#: a LOAD / COMPUTE / ACTIVATE from its command beat to its last SRAM write; host link, with its
#: bytewise receive CRC: a 16-byte CMD or DATA frame received byte by byte, checked and its beat
#: delivered, from cycle 58). The CRC proofs are complete: k-induction, and one combinational step.
PROOFS = {
    "counters_monotonic": (lambda: CountersMonotonic(SMALL_CONFIG.with_(energy_counter=True, counter_bits=32,
                                                                         bus_bytes=8)), "bmc", 20, 24),
    "npu_stream_rules": (lambda: NpuStreamRules(SMALL_CONFIG), "bmc", 10, 40),
    "rejected_writes_nothing": (lambda: RejectedWritesNothing(SMALL_CONFIG), "bmc", 8, 30),
    "writes_in_range": (lambda: WritesInRange(SMALL_CONFIG), "bmc", 12, 31),
    "link_stream_rules": (lambda: LinkStreamRules(), "bmc", 45, 64),
    "link_delivery": (lambda: LinkDelivery(), "bmc", 20, 62),
    "crc_serial": (lambda: CrcSerial(), "prove", 17, 17),
    "crc_residue": (lambda: CrcResidue(), "bmc", 1, 1),
}
