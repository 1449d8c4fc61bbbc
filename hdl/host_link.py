"""``HostLink``: the framed, CRC-32-checked byte protocol of ``golden/link.py`` in front of ``NpuTop``.

Bytes come from a UART receiver and go to a UART transmitter (``hdl/uart.py``); the link turns them
into the NPU's command / data-in streams and turns data-out beats, status and counters into frames.
The contract (frames, per-stream sequence numbers, what is acknowledged, dropped or refused) is the
module docstring of ``golden/link.py``; this module is its hardware.
"""
from amaranth import *
from amaranth.hdl import ResetInserter
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.link import (CRC_POLY, CRC_RESIDUE, INFO_FIELDS, PROTOCOL_VERSION, STATUS_BYTES,
                                 STATUS_HEADER_BYTES, SYNC, FrameType, NakReason)
from opennpu.golden.program import COUNTER_NAMES

from .common import delay_line, read_port_signature
from .top import CommandBeat, Status

__all__ = ["HostLink", "Crc32"]

_COMMAND_BYTES = 16


def _crc_step(crc, bit):
    """One bit of the CRC-32/IEEE register update (LSB-first, reflected polynomial)."""
    return (crc >> 1) ^ Mux(crc[0] ^ bit, CRC_POLY, 0)


class Crc32(wiring.Component):
    """CRC-32/IEEE register (``zlib.crc32`` without its final inversion).

    Bit-serial by default, 8 cycles a byte: one XOR per register bit instead of the ~9-input XOR trees
    of a bytewise update; the link's bytes come at most one per 40 cycles (a UART bit is at least 4
    cycles), so 8 cycles per byte cost nothing. ``serial=False`` adds a byte per cycle (the same
    register, its 8 steps unrolled): the delivery proof's configuration, where a frame then takes
    25 cycles instead of 225; the ``crc_serial`` proof shows that both registers agree.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to add. Serial: ``ready`` is high while no byte is being shifted in (a byte is taken,
        then ``ready`` is low for 8 cycles). Bytewise: always ready.
    clear : In(1)
        Start over (register = 0xFFFFFFFF) in the next cycle; only while ``i.ready``.
    value : Out(32)
        The register: ``~zlib.crc32(bytes so far)``, valid while ``i.ready``.
    """

    def __init__(self, *, serial: bool = True):
        self._serial = serial
        super().__init__({"i": In(stream.Signature(8)), "clear": In(1), "value": Out(32, init=0xFFFFFFFF)})

    def elaborate(self, platform):
        m = Module()
        crc = self.value
        if not self._serial:
            update = crc
            for k in range(8):
                step = Signal(32, name=f"step{k}")
                m.d.comb += step.eq(_crc_step(update, self.i.payload[k]))
                update = step
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.clear):
                m.d.sync += crc.eq(0xFFFFFFFF)
            with m.Elif(self.i.valid):
                m.d.sync += crc.eq(update)
            return m
        shift = Signal(8)
        left = Signal(range(9))                    # bits of ``shift`` not yet in the register
        m.d.comb += self.i.ready.eq(left == 0)
        with m.If(left != 0):
            m.d.sync += [crc.eq(_crc_step(crc, shift[0])), shift.eq(shift >> 1), left.eq(left - 1)]
        with m.Elif(self.clear):
            m.d.sync += crc.eq(0xFFFFFFFF)
        with m.Elif(self.i.valid):
            m.d.sync += [shift.eq(self.i.payload), left.eq(8)]
        return m


class HostLink(wiring.Component):
    """Frame receiver / transmitter: one frame buffer per stream (stop-and-wait), CRC-32 both ways.

    Receive path: ``HUNT`` for ``SYNC``, then type, sequence number, length, payload, 4 CRC bytes.
    ``CMD`` and ``DATA`` payload bytes go into their stream's frame buffer while they arrive. The
    buffer exists because the CRC comes last: nothing of a frame may reach the NPU before its last
    byte shows it intact. It is one byte-wide ``frame_max``-deep memory per stream (block RAM; its
    logic is two address counters), never a shift register of the whole frame. When the CRC and the
    sequence number are good (``golden/link.py``: the stream's next number) the buffer drains into
    ``cmd`` / ``din`` (2 cycles per byte, one beat presented at a time, valid and payload held until
    taken); the frame is acknowledged when its last beat is taken. ``RESET`` pulses ``npu_reset``.

    Transmit path: one frame at a time, in priority order NAK, ACK (reset, command, data), STATUS
    reply, INFO reply, then data-out beats (one ``DOUT`` frame per beat, taken from ``dout`` when its
    frame starts: no data-out buffer beyond that beat). The STATUS reply's counter bytes come from
    the NPU's COUNTERS snapshot word, one beat at a time (``counter_sel`` / ``counter_beat``): no
    readout of its own; they are the final counters when the reply's IDLE flag is set (the flags
    byte goes out several byte times before the first counter byte). Timing: the STATUS header reads
    ``npu_status`` through a register (one cycle late), the counter bytes come through registered
    ``counter_sel`` and ``counter_beat`` (ready three cycles after the byte index moves), and every
    payload byte is loaded from a register that holds the byte of the cycle before; bytes are at least
    9 cycles apart, so each is complete when it is sent, and no path runs from the NPU's state to the
    transmitter and its CRC.

    Throughput: ``rx`` takes a byte when the receive CRC register is free (one byte per 9 cycles at
    most); ``tx`` gets one byte per 9 cycles at most; both far above a UART's byte rate.

    Parameters
    ----------
    config : NpuConfig
    frame_max : int
        Largest CMD / DATA payload in bytes (the size of each frame buffer): a power of two, at
        least 16 (one command) and at least ``config.bus_bytes`` (one beat), at most 32768. 512 (the
        default) fits in one ECP5 block RAM with room to spare.
    timeout : int
        Idle cycles in the middle of a received frame after which it is dropped.
    serial_crc : bool
        The receive CRC register bit-serial (the default: a byte per 9 cycles) or bytewise (a byte
        per cycle, the delivery proof's configuration; see ``Crc32``).

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes.
    tx : Out(stream.Signature(8))
        Bytes to transmit.
    cmd, din : Out(stream.Signature(...)); dout : In(stream.Signature(...))
        The NPU's streams (``NpuTop`` seen from outside).
    npu_status : In(Status)
    counter_sel : Out(range(beats(8 * n))); counter_beat : In(8 * bus_bytes)
        ``NpuTop``'s counter snapshot readout (``counter_beat`` combinational from ``counter_sel``).
    rx_overrun, rx_framing_error : In(1)
        Sticky receiver errors, reported in the STATUS flags.
    npu_reset : Out(1)
        One-cycle pulse, from a register (it reaches every flip-flop of the NPU): reset the NPU and the
        drains, in the cycle after the cycle that checked the RESET frame's CRC.
    """

    def __init__(self, config: NpuConfig, *, frame_max: int = 512, timeout: int = 1 << 20,
                 serial_crc: bool = True):
        if (not isinstance(frame_max, int) or frame_max < max(_COMMAND_BYTES, config.bus_bytes)
                or frame_max & (frame_max - 1) or frame_max > 1 << 15):
            raise ValueError(f"frame_max must be a power of two in {max(16, config.bus_bytes)}..32768, "
                             f"got {frame_max!r}")
        if not isinstance(timeout, int) or timeout < 16:
            raise ValueError(f"timeout must be an int >= 16 (cycles), got {timeout!r}")
        self._config = config
        self._frame_max = frame_max
        self._timeout = timeout
        #: The receive CRC register (a submodule; public so that the delivery proof can relate it to
        #: its reference receiver's: ``synth/proofs.LinkDelivery``).
        self.rx_crc = Crc32(serial=serial_crc)
        bus = 8 * config.bus_bytes
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "cmd": Out(stream.Signature(CommandBeat)),
            "din": Out(stream.Signature(bus)),
            "dout": In(stream.Signature(bus)),
            "npu_status": In(Status),
            "counter_sel": Out(range(config.beats(8 * len(COUNTER_NAMES)))), "counter_beat": In(bus),
            "rx_overrun": In(1),
            "rx_framing_error": In(1),
            "npu_reset": Out(1),
        })

    @property
    def frame_max(self):
        return self._frame_max

    def info_values(self):
        """The INFO reply fields (``golden.link.INFO_FIELDS`` order)."""
        c = self._config
        return {"version": PROTOCOL_VERSION, "rows": c.rows, "cols": c.cols, "bus_bytes": c.bus_bytes,
                "act_depth": c.act_depth, "wgt_depth": c.wgt_depth, "acc_depth": c.acc_depth,
                "frame_max": self._frame_max}

    def elaborate(self, platform):
        m = Module()
        c = self._config
        fmax = self._frame_max
        len_bits = fmax.bit_length()                     # 0..frame_max
        reset_request = Signal()                         # a RESET frame was accepted this cycle
        m.d.sync += self.npu_reset.eq(reset_request)

        # -- per-stream state (0: commands, 1: data-in) -----------------------------------------
        bufs = [memory.Memory(shape=8, depth=fmax, init=[]) for _ in range(2)]
        m.submodules.cmd_buf, m.submodules.data_buf = bufs
        wr = [b.write_port() for b in bufs]
        rd = [b.read_port() for b in bufs]
        busy = [Signal(name=f"busy{s}") for s in range(2)]          # buffer full / draining
        last_seq = [Signal(8, init=0xFF, name=f"last_seq{s}") for s in range(2)]
        length = [Signal(len_bits, name=f"len{s}") for s in range(2)]
        cmd_last = Signal()                                          # the buffered frame was CMD_LAST
        start = [Signal(name=f"start{s}") for s in range(2)]        # accepted: begin draining
        drained = [Signal(name=f"drained{s}") for s in range(2)]    # last beat taken this cycle

        # -- pending transmissions --------------------------------------------------------------
        ack_pend = [Signal(name=f"ack_pend{s}") for s in range(2)]
        ack_reset, ack_reset_seq = Signal(), Signal(8)
        nak_pend, nak_type, nak_seq, nak_reason = Signal(), Signal(8), Signal(8), Signal(range(8))
        status_pend, info_pend = Signal(), Signal()
        status_seq, info_seq = Signal(8), Signal(8)     # the requests' SEQ, echoed in the replies
        crc_errors = Signal(8)
        dout_seq = Signal(8)

        # -- receiver ----------------------------------------------------------------------------
        m.submodules.rx_crc = rx_crc = self.rx_crc
        r_type, r_seq, r_len_lo = Signal(8), Signal(8), Signal(8)
        r_len, r_idx = Signal(len_bits), Signal(len_bits)
        r_tail = Signal(2)                                # CRC bytes received - 1
        r_stream, r_drop = Signal(), Signal()            # target buffer; it was busy: drop the payload
        idle_timer = Signal(range(self._timeout + 1))
        byte = self.rx.payload
        got = Signal()
        checking = Signal()                               # in CHECK: no byte taken
        m.d.comb += [self.rx.ready.eq(rx_crc.i.ready & ~checking), got.eq(self.rx.valid & self.rx.ready),
                     rx_crc.i.payload.eq(byte)]

        def add_to_crc():
            m.d.comb += rx_crc.i.valid.eq(1)

        def post_nak(reason):
            m.d.sync += [nak_pend.eq(1), nak_type.eq(r_type), nak_seq.eq(r_seq), nak_reason.eq(reason)]

        stale = Signal()                              # no byte for ``timeout`` cycles mid-frame
        with m.If(got):
            m.d.sync += idle_timer.eq(0)
        with m.Elif(~stale):
            m.d.sync += idle_timer.eq(idle_timer + 1)
        m.d.comb += stale.eq(idle_timer == self._timeout)

        with m.FSM(name="rx_fsm"):
            with m.State("HUNT"):
                with m.If(got & (byte == SYNC)):
                    m.d.comb += rx_crc.clear.eq(1)
                    m.next = "TYPE"
            for state, field, following in (("TYPE", r_type, "SEQ"), ("SEQ", r_seq, "LEN_LO"),
                                            ("LEN_LO", r_len_lo, "LEN_HI")):
                with m.State(state):             # one header byte into its register
                    with m.If(got):
                        add_to_crc()
                        m.d.sync += field.eq(byte)
                        m.next = following
                    with m.Elif(stale):          # a frame stalled mid-way: drop it
                        m.next = "HUNT"
            with m.State("LEN_HI"):
                with m.If(got):
                    add_to_crc()
                    total = Cat(r_len_lo, byte)
                    m.d.sync += [r_len.eq(total), r_idx.eq(0), r_tail.eq(0)]
                    is_cmd = (r_type == FrameType.CMD) | (r_type == FrameType.CMD_LAST)
                    is_data = r_type == FrameType.DATA
                    is_ctrl = ((r_type == FrameType.STATUS) | (r_type == FrameType.INFO)
                               | (r_type == FrameType.RESET))
                    fits = (total != 0) & (total <= fmax)
                    cmd_ok = fits & (total[:4] == 0)
                    data_ok = fits & ((total & (c.bus_bytes - 1)) == 0)
                    with m.If(is_cmd | is_data):
                        m.d.sync += [r_stream.eq(is_data), r_drop.eq(Mux(is_data, busy[1], busy[0]))]
                        with m.If(Mux(is_data, data_ok, cmd_ok)):
                            m.next = "PAYLOAD"
                        with m.Else():
                            post_nak(NakReason.LENGTH)
                            m.next = "HUNT"
                    with m.Elif(is_ctrl):
                        with m.If(total == 0):
                            m.next = "CRC"
                        with m.Else():
                            post_nak(NakReason.LENGTH)
                            m.next = "HUNT"
                    with m.Else():
                        post_nak(NakReason.TYPE)
                        m.next = "HUNT"
                with m.Elif(stale):
                    m.next = "HUNT"
            with m.State("PAYLOAD"):
                with m.If(got):
                    add_to_crc()
                    for s in range(2):
                        m.d.comb += [wr[s].addr.eq(r_idx), wr[s].data.eq(byte),
                                     wr[s].en.eq(~r_drop & (r_stream == s))]
                    m.d.sync += r_idx.eq(r_idx + 1)
                    with m.If(r_idx + 1 == r_len):
                        m.next = "CRC"
                with m.Elif(stale):
                    m.next = "HUNT"
            with m.State("CRC"):
                with m.If(got):
                    add_to_crc()
                    m.d.sync += r_tail.eq(r_tail + 1)
                    with m.If(r_tail == 3):
                        m.next = "CHECK"
                with m.Elif(stale):
                    m.next = "HUNT"
            with m.State("CHECK"):                # the last CRC byte is being shifted in
                m.d.comb += checking.eq(1)
                with m.If(rx_crc.i.ready):
                    m.next = "HUNT"
                    with m.If(rx_crc.value != CRC_RESIDUE):
                        post_nak(NakReason.CRC)
                        with m.If(crc_errors != 0xFF):
                            m.d.sync += crc_errors.eq(crc_errors + 1)
                    with m.Elif(r_type == FrameType.STATUS):
                        m.d.sync += [status_pend.eq(1), status_seq.eq(r_seq)]
                    with m.Elif(r_type == FrameType.INFO):
                        m.d.sync += [info_pend.eq(1), info_seq.eq(r_seq)]
                    with m.Elif(r_type == FrameType.RESET):
                        m.d.comb += reset_request.eq(1)
                        m.d.sync += [ack_reset.eq(1), ack_reset_seq.eq(r_seq)]
                    with m.Else():
                        for s in range(2):
                            with m.If(r_stream == s):
                                with m.If(r_seq == last_seq[s]):
                                    # Already forwarded: acknowledge again once the buffer is free.
                                    with m.If(~busy[s]):
                                        m.d.sync += ack_pend[s].eq(1)
                                with m.Elif(r_seq != (last_seq[s] + 1)[:8]):
                                    post_nak(NakReason.SEQ)
                                with m.Elif(r_drop):
                                    post_nak(NakReason.BUSY)
                                with m.Else():
                                    m.d.comb += start[s].eq(1)
                                    m.d.sync += [busy[s].eq(1), last_seq[s].eq(r_seq), length[s].eq(r_len)]
                                    if s == 0:
                                        m.d.sync += cmd_last.eq(r_type == FrameType.CMD_LAST)

        # -- drains: buffer -> NPU stream (reset with the NPU) ---------------------------------------
        reset_drains = ResetInserter(self.npu_reset)
        for s, (port, beat_bytes) in enumerate([(self.cmd, _COMMAND_BYTES), (self.din, c.bus_bytes)]):
            drain = _Drain(beat_bytes, fmax)
            m.submodules[f"drain{s}"] = reset_drains(drain)
            wiring.connect(m, drain.rd, rd[s])
            m.d.comb += [drain.start.eq(start[s]), drain.length.eq(length[s]),
                         port.valid.eq(drain.o.valid), drain.o.ready.eq(port.ready), drained[s].eq(drain.done)]
            if s == 0:
                m.d.comb += [port.payload.word.eq(drain.o.payload), port.payload.last.eq(cmd_last & drain.o_final)]
            else:
                m.d.comb += port.payload.eq(drain.o.payload)
            with m.If(drained[s]):
                m.d.sync += [busy[s].eq(0), ack_pend[s].eq(1)]

        # -- transmitter ---------------------------------------------------------------------------
        npu_status = Signal(Status)
        m.d.sync += npu_status.eq(self.npu_status)
        status_header = Cat(
            npu_status.error, C(0, 5), npu_status.rejected,
            npu_status.idle, busy[0], busy[1], self.rx_overrun, self.rx_framing_error, C(0, 3),
            last_seq[0], last_seq[1], dout_seq, crc_errors)
        assert len(status_header) == 8 * STATUS_HEADER_BYTES
        info_bytes = Cat(*(C(v, 32) for v in (self.info_values()[f] for f in INFO_FIELDS)))
        beat = Signal(8 * c.bus_bytes)

        # Frame kinds: type, payload length, payload byte ``i`` (a Value of ``t_idx``).
        t_idx = Signal(range(max(STATUS_BYTES, len(info_bytes) // 8, c.bus_bytes)))
        t_seq, t_b0 = Signal(8), Signal(8)         # sequence number; ACK / NAK payload byte 0
        # STATUS: the header, then counter byte ``t_idx - STATUS_HEADER_BYTES`` from its snapshot beat.
        counter_byte = (t_idx - STATUS_HEADER_BYTES)[:len(t_idx)]
        in_beat = (c.bus_bytes - 1).bit_length()        # bus_bytes is a power of two
        # (``counter_sel`` and ``counter_beat`` through registers: the byte is ready 3 cycles after ``t_idx``.)
        counter_beat = Signal.like(self.counter_beat)
        m.d.sync += [self.counter_sel.eq(counter_byte[in_beat:]), counter_beat.eq(self.counter_beat)]
        status_byte = Mux(t_idx < STATUS_HEADER_BYTES, status_header.word_select(t_idx[:(STATUS_HEADER_BYTES - 1).bit_length()], 8),
                          counter_beat.word_select(delay_line(m, counter_byte[:in_beat], 2, "counter_byte"), 8)
                          if in_beat else counter_beat)
        kinds = {
            "NAK": (FrameType.NAK, 2, Mux(t_idx[0], nak_reason, t_b0)),
            "ACK": (FrameType.ACK, 1, t_b0),
            "STATUS": (FrameType.STATUS_REPLY, STATUS_BYTES, status_byte),
            "INFO": (FrameType.INFO_REPLY, len(info_bytes) // 8, info_bytes.word_select(t_idx, 8)),
            "DOUT": (FrameType.DOUT, c.bus_bytes, beat.word_select(t_idx, 8)),
        }
        kind = Signal(range(len(kinds)))
        K = {name: i for i, name in enumerate(kinds)}
        t_type, t_len, payload_byte = Signal(8), Signal(16), Signal(8)
        with m.Switch(kind):
            for name, (ftype, nbytes, value) in kinds.items():
                with m.Case(K[name]):
                    m.d.comb += [t_type.eq(ftype), t_len.eq(nbytes)]
                    m.d.sync += payload_byte.eq(value)      # byte ``t_idx`` of the cycle before

        m.submodules.tx_crc = tx_crc = Crc32()
        t_head = Signal(range(5))                  # header byte index
        t_tail = Signal(2)                         # CRC byte index
        tx_full = Signal()                         # ``tx.payload`` holds a byte to send
        can_load = ~tx_full & tx_crc.i.ready       # the CRC of the byte before is complete
        m.d.comb += self.tx.valid.eq(tx_full)
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += tx_full.eq(0)

        def load(value, crc):
            m.d.sync += [self.tx.payload.eq(value), tx_full.eq(1)]
            m.d.comb += [tx_crc.i.valid.eq(crc), tx_crc.i.payload.eq(value)]

        with m.FSM(name="tx_fsm"):
            with m.State("IDLE"):
                def begin(name, seq, b0=0):
                    m.d.sync += [kind.eq(K[name]), t_seq.eq(seq), t_b0.eq(b0), t_head.eq(0), t_idx.eq(0),
                                 t_tail.eq(0)]
                    m.next = "HEAD"
                with m.If(can_load):
                    with m.If(nak_pend):
                        begin("NAK", nak_seq, nak_type)
                        m.d.sync += nak_pend.eq(0)
                    with m.Elif(ack_reset):
                        begin("ACK", ack_reset_seq, FrameType.RESET)
                        m.d.sync += ack_reset.eq(0)
                    with m.Elif(ack_pend[0]):
                        begin("ACK", last_seq[0], FrameType.CMD)
                        m.d.sync += ack_pend[0].eq(0)
                    with m.Elif(ack_pend[1]):
                        begin("ACK", last_seq[1], FrameType.DATA)
                        m.d.sync += ack_pend[1].eq(0)
                    with m.Elif(status_pend):
                        begin("STATUS", status_seq)
                        m.d.sync += status_pend.eq(0)
                    with m.Elif(info_pend):
                        begin("INFO", info_seq)
                        m.d.sync += info_pend.eq(0)
                    with m.Elif(self.dout.valid):
                        begin("DOUT", dout_seq)
                        m.d.comb += self.dout.ready.eq(1)
                        m.d.sync += [beat.eq(self.dout.payload), dout_seq.eq(dout_seq + 1)]
                    with m.If(nak_pend | ack_reset | ack_pend[0] | ack_pend[1] | status_pend | info_pend
                              | self.dout.valid):
                        m.d.comb += tx_crc.clear.eq(1)
            with m.State("HEAD"):                   # SYNC TYPE SEQ LEN_LO LEN_HI
                with m.If(can_load):
                    head = Array([C(SYNC, 8), t_type, t_seq, t_len[:8], t_len[8:]])[t_head]
                    load(head, crc=t_head != 0)
                    m.d.sync += t_head.eq(t_head + 1)
                    with m.If(t_head == 4):
                        m.next = "BODY"
            with m.State("BODY"):
                with m.If(can_load):
                    load(payload_byte, crc=1)
                    m.d.sync += t_idx.eq(t_idx + 1)
                    with m.If(t_idx + 1 == t_len):
                        m.next = "TAIL"
            with m.State("TAIL"):                   # ~CRC, little-endian
                with m.If(can_load):
                    load((~tx_crc.value).word_select(t_tail, 8), crc=False)
                    m.d.sync += t_tail.eq(t_tail + 1)
                    with m.If(t_tail == 3):
                        m.next = "IDLE"

        # -- RESET: sequence numbers, buffers and drains start over (after this cycle's updates) -----
        with m.If(reset_request):
            m.d.sync += [busy[0].eq(0), busy[1].eq(0), last_seq[0].eq(0xFF), last_seq[1].eq(0xFF),
                         ack_pend[0].eq(0), ack_pend[1].eq(0), dout_seq.eq(0), crc_errors.eq(0)]
        return m


class _Drain(wiring.Component):
    """Reads ``length`` bytes (a whole number of beats) from a frame buffer and presents them as
    ``beat_bytes``-byte beats (little-endian), 2 cycles per byte; ``done`` pulses when the last beat is
    taken, ``o_final`` marks it."""

    def __init__(self, beat_bytes, depth):
        self._beat_bytes = beat_bytes
        super().__init__({
            "start": In(1), "length": In(depth.bit_length()),
            "rd": In(read_port_signature(depth, 8)),
            "o": Out(stream.Signature(8 * beat_bytes)), "o_final": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._beat_bytes
        idx = Signal.like(self.length)           # bytes read so far
        beat_full = C(1) if n == 1 else idx[:(n - 1).bit_length()] == n - 1    # this byte ends a beat
        m.d.comb += [self.rd.addr.eq(idx), self.rd.en.eq(0), self.o_final.eq(idx == self.length)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += idx.eq(0)
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += self.rd.en.eq(1)
                m.next = "CAPTURE"
            with m.State("CAPTURE"):
                m.d.sync += [self.o.payload.eq(Cat(self.o.payload[8:], self.rd.data)), idx.eq(idx + 1)]
                with m.If(beat_full):
                    m.next = "PRESENT"
                with m.Else():
                    m.next = "READ"
            with m.State("PRESENT"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    with m.If(idx == self.length):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "READ"
        return m
