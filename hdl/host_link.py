"""``HostLink``: the framed, checksummed byte protocol of ``golden/link.py`` in front of ``NpuTop``.

Bytes come from a UART receiver and go to a UART transmitter (``hdl/uart.py``); the link turns them
into the NPU's command / data-in streams and turns data-out beats, status and counters into frames.
"""
from amaranth import *
from amaranth.hdl import ResetInserter
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.link import INFO_FIELDS, PROTOCOL_VERSION, SYNC, FrameType, NakReason, crc8_update
from opennpu.golden.program import COUNTER_NAMES

from .common import read_port_signature
from .top import CommandBeat, Status

__all__ = ["HostLink", "crc8_next"]

_COMMAND_BYTES = 16


def crc8_next(crc, byte):
    """CRC-8 (poly 0x07, MSB first) of ``crc`` after one more ``byte``, as a combinational Value.

    The update is linear in ``v = crc ^ byte``: each output bit is the XOR of a fixed set of ``v`` bits
    (taken from ``golden.link.crc8_update``), so it costs one small XOR per bit.
    """
    v = Value.cast(crc ^ byte)[:8]
    bits = []
    for out in range(8):
        taps = [i for i in range(8) if crc8_update(0, 1 << i) >> out & 1]
        bits.append(Cat(v[i] for i in taps).xor())
    return Cat(*bits)


class HostLink(wiring.Component):
    """Frame receiver / transmitter with one command buffer and one data buffer (stop-and-wait).

    Receive path: ``HUNT`` for ``SYNC``, then type, sequence number, length, payload, CRC. ``CMD`` and
    ``DATA`` payloads go into their stream's buffer (a ``frame_max`` x 8 memory, block RAM) while
    they arrive; only when the CRC matches does the buffer drain into ``cmd`` / ``din`` (2 cycles per
    byte, one beat presented at a time), after which the frame is acknowledged. Nothing from a frame
    with a bad CRC reaches the NPU. ``RESET`` pulses ``npu_reset``.

    Transmit path: one frame at a time, in priority order NAK, ACK (reset, command, data), STATUS
    reply, INFO reply, then data-out beats (one ``DOUT`` frame per beat).

    Parameters
    ----------
    config : NpuConfig
    frame_max : int
        Largest CMD / DATA payload in bytes: a power of two, at least 16 and at least ``bus_bytes``.
    timeout : int
        Idle cycles in the middle of a received frame after which it is dropped.

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes.
    tx : Out(stream.Signature(8))
        Bytes to transmit.
    cmd, din : Out(stream.Signature(...)); dout : In(stream.Signature(...))
        The NPU's streams (``NpuTop`` seen from outside).
    npu_status : In(Status); npu_counters : In(ArrayLayout(unsigned(64), n))
    rx_overrun, rx_framing_error : In(1)
        Sticky receiver errors, reported in the STATUS flags.
    npu_reset : Out(1)
        One-cycle pulse, from a register (it reaches every flip-flop of the NPU): reset the NPU and the
        drains, in the cycle after the RESET frame's last byte.
    """

    def __init__(self, config: NpuConfig, *, frame_max: int = 512, timeout: int = 1 << 20):
        if (not isinstance(frame_max, int) or frame_max < max(_COMMAND_BYTES, config.bus_bytes)
                or frame_max & (frame_max - 1) or frame_max > 1 << 15):
            raise ValueError(f"frame_max must be a power of two in {max(16, config.bus_bytes)}..32768, "
                             f"got {frame_max!r}")
        if not isinstance(timeout, int) or timeout < 16:
            raise ValueError(f"timeout must be an int >= 16 (cycles), got {timeout!r}")
        self._config = config
        self._frame_max = frame_max
        self._timeout = timeout
        bus = 8 * config.bus_bytes
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "cmd": Out(stream.Signature(CommandBeat)),
            "din": Out(stream.Signature(bus)),
            "dout": In(stream.Signature(bus)),
            "npu_status": In(Status),
            "npu_counters": In(data.ArrayLayout(unsigned(64), len(COUNTER_NAMES))),
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
        len_bits = (fmax - 1).bit_length() + 1          # 0..frame_max
        reset_request = Signal()                         # a RESET frame ended this cycle
        m.d.sync += self.npu_reset.eq(reset_request)

        # -- per-stream state (0: commands, 1: data-in) -----------------------------------------
        bufs = [memory.Memory(shape=8, depth=fmax, init=[]) for _ in range(2)]
        m.submodules.cmd_buf, m.submodules.data_buf = bufs
        wr = [b.write_port() for b in bufs]
        rd = [b.read_port() for b in bufs]
        busy = [Signal(name=f"busy{s}") for s in range(2)]          # buffer full / draining
        last_seq = [Signal(8, name=f"last_seq{s}") for s in range(2)]
        seen = [Signal(name=f"seen{s}") for s in range(2)]          # a frame accepted since reset
        length = [Signal(len_bits, name=f"len{s}") for s in range(2)]
        cmd_last = Signal()                                          # the buffered frame was CMD_LAST
        start = [Signal(name=f"start{s}") for s in range(2)]        # accepted: begin draining
        drained = [Signal(name=f"drained{s}") for s in range(2)]    # last beat taken this cycle

        # -- pending transmissions --------------------------------------------------------------
        ack_pend = [Signal(name=f"ack_pend{s}") for s in range(2)]
        ack_reset, ack_reset_seq = Signal(), Signal(8)
        nak_pend, nak_type, nak_seq, nak_reason = Signal(), Signal(8), Signal(8), Signal(8)
        status_pend, info_pend = Signal(), Signal()
        crc_errors = Signal(8)
        dout_seq = Signal(8)

        # -- receiver ----------------------------------------------------------------------------
        r_type, r_seq, r_len, r_idx, r_crc = Signal(8), Signal(8), Signal(16), Signal(16), Signal(8)
        r_stream, r_drop = Signal(), Signal()        # target buffer; buffer was busy: drop payload
        idle_timer = Signal(range(self._timeout + 1))
        byte = self.rx.payload
        got = Signal()
        m.d.comb += [self.rx.ready.eq(1), got.eq(self.rx.valid)]
        crc_next = crc8_next(r_crc, byte)

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
                    m.d.sync += r_crc.eq(0)
                    m.next = "TYPE"
            for state, field, following in (("TYPE", r_type, "SEQ"), ("SEQ", r_seq, "LEN_LO"),
                                            ("LEN_LO", r_len, "LEN_HI")):
                with m.State(state):             # one header byte into its register
                    with m.If(got):
                        m.d.sync += [field.eq(byte), r_crc.eq(crc_next)]
                        m.next = following
                    with m.Elif(stale):          # a frame stalled mid-way: drop it
                        m.next = "HUNT"
            with m.State("LEN_HI"):
                with m.If(got):
                    total = Cat(r_len[:8], byte)
                    m.d.sync += [r_len.eq(total), r_crc.eq(crc_next), r_idx.eq(0)]
                    is_cmd = (r_type == FrameType.CMD) | (r_type == FrameType.CMD_LAST)
                    is_data = r_type == FrameType.DATA
                    is_ctrl = ((r_type == FrameType.STATUS) | (r_type == FrameType.INFO)
                               | (r_type == FrameType.RESET))
                    fits = (total != 0) & (total <= fmax)
                    cmd_ok = fits & (total[:4] == 0)
                    data_ok = fits & ((total & (c.bus_bytes - 1)) == 0)
                    with m.If(is_cmd | is_data):
                        target = Mux(is_cmd, 0, 1)
                        m.d.sync += [r_stream.eq(target), r_drop.eq(Mux(is_cmd, busy[0], busy[1]))]
                        with m.If(Mux(is_cmd, cmd_ok, data_ok)):
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
                with m.Elif(stale):          # a frame stalled mid-way: drop it
                    m.next = "HUNT"
            with m.State("PAYLOAD"):
                with m.If(got):
                    for s in range(2):
                        m.d.comb += [wr[s].addr.eq(r_idx), wr[s].data.eq(byte),
                                     wr[s].en.eq(~r_drop & (r_stream == s))]
                    m.d.sync += [r_idx.eq(r_idx + 1), r_crc.eq(crc_next)]
                    with m.If(r_idx + 1 == r_len):
                        m.next = "CRC"
                with m.Elif(stale):          # a frame stalled mid-way: drop it
                    m.next = "HUNT"
            with m.State("CRC"):
                with m.If(got):
                    m.next = "HUNT"
                    with m.If(byte != r_crc):
                        post_nak(NakReason.CRC)
                        with m.If(crc_errors != 0xFF):
                            m.d.sync += crc_errors.eq(crc_errors + 1)
                    with m.Elif(r_type == FrameType.STATUS):
                        m.d.sync += status_pend.eq(1)
                    with m.Elif(r_type == FrameType.INFO):
                        m.d.sync += info_pend.eq(1)
                    with m.Elif(r_type == FrameType.RESET):
                        m.d.comb += reset_request.eq(1)
                        m.d.sync += [ack_reset.eq(1), ack_reset_seq.eq(r_seq)]
                    with m.Else():
                        for s in range(2):
                            with m.If(r_stream == s):
                                duplicate = seen[s] & (r_seq == last_seq[s])
                                with m.If(duplicate):
                                    # Already forwarded: acknowledge again once the buffer is free.
                                    with m.If(~busy[s]):
                                        m.d.sync += ack_pend[s].eq(1)
                                with m.Elif(r_drop):
                                    post_nak(NakReason.BUSY)
                                with m.Else():
                                    m.d.comb += start[s].eq(1)
                                    m.d.sync += [busy[s].eq(1), seen[s].eq(1), last_seq[s].eq(r_seq),
                                                 length[s].eq(r_len)]
                                    if s == 0:
                                        m.d.sync += cmd_last.eq(r_type == FrameType.CMD_LAST)
                with m.Elif(stale):
                    m.next = "HUNT"

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
        status_bytes = Cat(
            self.npu_status.error, C(0, 5), self.npu_status.rejected,
            self.npu_status.idle, busy[0], busy[1], self.rx_overrun, self.rx_framing_error, C(0, 3),
            last_seq[0], last_seq[1], dout_seq, crc_errors, self.npu_counters.as_value())
        info_bytes = Cat(*(C(v, 32) for v in (self.info_values()[f] for f in INFO_FIELDS)))
        beat = Signal(8 * c.bus_bytes)

        kinds = ["NAK", "ACK_RESET", "ACK_CMD", "ACK_DATA", "STATUS", "INFO", "DOUT"]
        kind = Signal(range(len(kinds)))
        K = {name: i for i, name in enumerate(kinds)}
        t_type, t_seq, t_len = Signal(8), Signal(8), Signal(16)
        t_pos, t_crc = Signal(16), Signal(8)
        payload_byte = Signal(8)
        with m.Switch(kind):
            with m.Case(K["NAK"]):
                m.d.comb += payload_byte.eq(Mux(t_pos == 5, nak_type, nak_reason))
            with m.Case(K["ACK_RESET"]):
                m.d.comb += payload_byte.eq(FrameType.RESET)
            with m.Case(K["ACK_CMD"]):
                m.d.comb += payload_byte.eq(FrameType.CMD)
            with m.Case(K["ACK_DATA"]):
                m.d.comb += payload_byte.eq(FrameType.DATA)
            with m.Case(K["STATUS"]):
                m.d.comb += payload_byte.eq(status_bytes.word_select((t_pos - 5)[:7], 8))
            with m.Case(K["INFO"]):
                m.d.comb += payload_byte.eq(info_bytes.word_select((t_pos - 5)[:6], 8))
            with m.Case(K["DOUT"]):
                m.d.comb += payload_byte.eq(beat.word_select((t_pos - 5)[:max(1, (c.bus_bytes - 1).bit_length())], 8))
        tx_byte, tx_byte_q = Signal(8), Signal(8)
        with m.Switch(t_pos):
            with m.Case(0):
                m.d.comb += tx_byte.eq(SYNC)
            with m.Case(1):
                m.d.comb += tx_byte.eq(t_type)
            with m.Case(2):
                m.d.comb += tx_byte.eq(t_seq)
            with m.Case(3):
                m.d.comb += tx_byte.eq(t_len[:8])
            with m.Case(4):
                m.d.comb += tx_byte.eq(t_len[8:])
            with m.Default():
                m.d.comb += tx_byte.eq(Mux(t_pos == t_len + 5, t_crc, payload_byte))

        with m.FSM(name="tx_fsm"):
            with m.State("IDLE"):
                def begin(name, ftype, seq, nbytes):
                    m.d.sync += [kind.eq(K[name]), t_type.eq(ftype), t_seq.eq(seq), t_len.eq(nbytes),
                                 t_pos.eq(0), t_crc.eq(0)]
                    m.next = "FETCH"
                with m.If(nak_pend):
                    begin("NAK", FrameType.NAK, nak_seq, 2)
                    m.d.sync += nak_pend.eq(0)
                with m.Elif(ack_reset):
                    begin("ACK_RESET", FrameType.ACK, ack_reset_seq, 1)
                    m.d.sync += ack_reset.eq(0)
                with m.Elif(ack_pend[0]):
                    begin("ACK_CMD", FrameType.ACK, last_seq[0], 1)
                    m.d.sync += ack_pend[0].eq(0)
                with m.Elif(ack_pend[1]):
                    begin("ACK_DATA", FrameType.ACK, last_seq[1], 1)
                    m.d.sync += ack_pend[1].eq(0)
                with m.Elif(status_pend):
                    begin("STATUS", FrameType.STATUS_REPLY, 0, len(status_bytes) // 8)
                    m.d.sync += status_pend.eq(0)
                with m.Elif(info_pend):
                    begin("INFO", FrameType.INFO_REPLY, 0, len(info_bytes) // 8)
                    m.d.sync += info_pend.eq(0)
                with m.Elif(self.dout.valid):
                    begin("DOUT", FrameType.DOUT, dout_seq, c.bus_bytes)
                    m.d.comb += self.dout.ready.eq(1)
                    m.d.sync += [beat.eq(self.dout.payload), dout_seq.eq(dout_seq + 1)]
            with m.State("FETCH"):                  # the byte is registered first (timing)
                m.d.sync += tx_byte_q.eq(tx_byte)
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_byte_q)]
                with m.If(self.tx.ready):
                    m.d.sync += t_pos.eq(t_pos + 1)
                    with m.If(t_pos != 0):
                        m.d.sync += t_crc.eq(crc8_next(t_crc, tx_byte_q))
                    with m.If(t_pos == t_len + 5):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "FETCH"

        # -- RESET: sequence numbers, buffers and drains start over (after this cycle's updates) -----
        with m.If(reset_request):
            m.d.sync += [busy[0].eq(0), busy[1].eq(0), seen[0].eq(0), seen[1].eq(0),
                         ack_pend[0].eq(0), ack_pend[1].eq(0), dout_seq.eq(0), crc_errors.eq(0)]
        return m


class _Drain(wiring.Component):
    """Reads ``length`` bytes from a frame buffer and presents them as ``beat_bytes``-byte beats
    (little-endian), 2 cycles per byte; ``done`` pulses when the last beat is taken."""

    def __init__(self, beat_bytes, depth):
        self._beat_bytes = beat_bytes
        len_bits = (depth - 1).bit_length() + 1
        super().__init__({
            "start": In(1), "length": In(len_bits),
            "rd": In(read_port_signature(depth, 8)),
            "o": Out(stream.Signature(8 * beat_bytes)), "o_final": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._beat_bytes
        idx = Signal.like(self.length)
        filled = Signal(range(n + 1))
        m.d.comb += [self.rd.addr.eq(idx), self.rd.en.eq(0), self.o_final.eq(idx == self.length)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += [self.rd.addr.eq(0), self.rd.en.eq(1)]
                    m.d.sync += [idx.eq(0), filled.eq(0)]
                    m.next = "CAPTURE"
            with m.State("READ"):
                m.d.comb += self.rd.en.eq(1)
                m.next = "CAPTURE"
            with m.State("CAPTURE"):
                m.d.sync += [self.o.payload.eq(Cat(self.o.payload[8:], self.rd.data)), idx.eq(idx + 1),
                             filled.eq(filled + 1)]
                with m.If(filled == n - 1):
                    m.next = "PRESENT"
                with m.Else():
                    m.next = "READ"
            with m.State("PRESENT"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.d.sync += filled.eq(0)
                    with m.If(idx == self.length):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "READ"
        return m
