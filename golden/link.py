"""The board's host-link wire protocol: frames, checksum and payload layouts.

One definition shared by the RTL (``hdl/host_link.py``) and the host driver (``sim/uart_host.py``),
like ``isa.py`` is for commands. The link carries the NPU's three streams (commands, data-in,
data-out) plus status / counter readback over one full-duplex byte channel (a UART).

Frame (both directions)::

    SYNC  TYPE  SEQ  LEN_LO  LEN_HI  PAYLOAD[LEN]  CRC

``SYNC`` = 0xA5; ``CRC`` is CRC-8 (polynomial 0x07, init 0, no reflection: CRC-8/SMBUS) over every
byte from ``TYPE`` to the end of the payload.

Host -> device
--------------
===========  ======================================================================================
``CMD``      ``LEN`` = 16·n, n commands (128-bit little-endian words, ``isa.encode``).
``CMD_LAST`` like ``CMD``; its final command is the last one of the program (``CommandBeat.last``).
``DATA``     ``LEN`` = bus_bytes·n: n data-in beats, little-endian.
``STATUS``   ``LEN`` = 0: asks for a ``STATUS`` reply.
``INFO``     ``LEN`` = 0: asks for an ``INFO`` reply.
``RESET``    ``LEN`` = 0: resets the NPU (counters, SRAM contents stay) and the link's sequence
             numbers and buffers; answered with ``ACK``.
===========  ======================================================================================

Flow control and retransmission (stop-and-wait per stream): the device holds one frame buffer for
commands and one for data-in (``frame_max`` bytes each). The host sends a ``CMD``/``DATA`` frame only
when the previous frame of that stream was acknowledged. The device checks the CRC, forwards the
payload into the NPU stream and sends ``ACK`` (``SEQ`` echoed, payload = the acknowledged type) once the
whole payload is inside the NPU, so the buffer is free again. A frame with a bad CRC, a bad length or
an unknown type is answered with ``NAK`` (payload: type, reason) and dropped; nothing reaches the NPU.
A frame whose ``SEQ`` equals the last accepted ``SEQ`` of its stream is a retransmission of a frame
that already got through: it is acknowledged again (once the buffer is free) but not forwarded twice.
After ``timeout`` idle cycles in the middle of a frame the receiver drops it and hunts for ``SYNC``.

Device -> host
--------------
==========  ===========================================================================================
``ACK``     payload: [acknowledged type]; ``SEQ`` = its sequence number.
``NAK``     payload: [type, reason]; ``SEQ`` = the rejected frame's sequence number.
``DOUT``    payload: one data-out beat (bus_bytes bytes); ``SEQ`` counts DOUT frames (wraps at 256),
            so the host notices a lost frame.
``STATUS``  ``STATUS_LAYOUT`` followed by the 64-bit counters (``COUNTER_NAMES`` order).
``INFO``    ``INFO_FIELDS``, 32-bit little-endian each.
==========  ===========================================================================================
"""
from __future__ import annotations

import enum
import struct

from .program import COUNTER_NAMES

__all__ = ["SYNC", "HEADER_BYTES", "FrameType", "NakReason", "StatusFlag", "STATUS_HEADER_BYTES",
           "STATUS_BYTES", "INFO_FIELDS", "INFO_BYTES", "PROTOCOL_VERSION", "crc8", "crc8_update",
           "encode_frame", "FrameParser", "decode_status", "decode_info"]

SYNC = 0xA5
HEADER_BYTES = 5                     # SYNC TYPE SEQ LEN_LO LEN_HI
PROTOCOL_VERSION = 1


class FrameType(enum.IntEnum):
    # host -> device
    CMD = 0x01
    CMD_LAST = 0x02
    DATA = 0x03
    STATUS = 0x04
    INFO = 0x05
    RESET = 0x06
    # device -> host
    ACK = 0x81
    NAK = 0x82
    DOUT = 0x83
    STATUS_REPLY = 0x84
    INFO_REPLY = 0x85


class NakReason(enum.IntEnum):
    CRC = 1          # checksum mismatch
    LENGTH = 2       # length not allowed for the type (or larger than the frame buffer)
    TYPE = 3         # unknown frame type
    BUSY = 4         # a new frame arrived while the stream's buffer was still draining


class StatusFlag(enum.IntFlag):
    IDLE = 0x01          # the NPU is idle (no program open, nothing executing, no output pending)
    CMD_BUSY = 0x02      # the command buffer is still draining into the NPU
    DATA_BUSY = 0x04     # the data buffer is still draining into the NPU
    OVERRUN = 0x08       # sticky: a received byte was lost (receiver not read in time)
    FRAMING = 0x10       # sticky: a byte without a stop bit was received


#: STATUS reply header (then 8 bytes per counter): error, rejected, flags, last accepted CMD / DATA
#: sequence numbers, next DOUT sequence number, count of frames NAKed for a bad CRC (saturates).
STATUS_HEADER = struct.Struct("<BHBBBBB")
STATUS_HEADER_BYTES = STATUS_HEADER.size
STATUS_BYTES = STATUS_HEADER_BYTES + 8 * len(COUNTER_NAMES)

INFO_FIELDS = ("version", "rows", "cols", "bus_bytes", "act_depth", "wgt_depth", "acc_depth", "frame_max")
INFO_BYTES = 4 * len(INFO_FIELDS)


def crc8_update(crc: int, byte: int) -> int:
    """CRC-8/SMBUS (poly 0x07, MSB first) after one more byte."""
    crc ^= byte
    for _ in range(8):
        crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc8(data: bytes, crc: int = 0) -> int:
    for byte in data:
        crc = crc8_update(crc, byte)
    return crc


def encode_frame(ftype: int, seq: int, payload: bytes = b"") -> bytes:
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number must be 0..255, got {seq}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"frame payload is at most 65535 bytes, got {len(payload)}")
    body = bytes([int(ftype), seq, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    return bytes([SYNC]) + body + bytes([crc8(body)])


class FrameParser:
    """Incremental receiver: ``feed(bytes)`` returns the complete frames as ``(type, seq, payload)``.

    Frames with a bad CRC are counted in ``crc_errors`` and skipped (the parser resynchronises on the
    next ``SYNC`` byte after the bad frame's first byte).
    """

    def __init__(self, max_payload: int = 4096):
        self._buf = bytearray()
        self._max = max_payload
        self.crc_errors = 0

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buf += data
        frames = []
        while True:
            start = self._buf.find(SYNC)
            if start < 0:
                self._buf.clear()
                return frames
            del self._buf[:start]
            if len(self._buf) < HEADER_BYTES:
                return frames
            length = self._buf[3] | self._buf[4] << 8
            if length > self._max:
                del self._buf[:1]
                continue
            end = HEADER_BYTES + length + 1
            if len(self._buf) < end:
                return frames
            body = bytes(self._buf[1:end - 1])
            if crc8(body) != self._buf[end - 1]:
                self.crc_errors += 1
                del self._buf[:1]
                continue
            frames.append((body[0], body[1], body[4:]))
            del self._buf[:end]


def decode_status(payload: bytes) -> dict:
    if len(payload) != STATUS_BYTES:
        raise ValueError(f"STATUS reply must be {STATUS_BYTES} bytes, got {len(payload)}")
    error, rejected, flags, cmd_seq, data_seq, dout_seq, crc_errors = STATUS_HEADER.unpack_from(payload)
    counters = {name: int.from_bytes(payload[STATUS_HEADER_BYTES + 8 * i:STATUS_HEADER_BYTES + 8 * i + 8],
                                     "little") for i, name in enumerate(COUNTER_NAMES)}
    return {"error": error, "rejected": rejected, "flags": StatusFlag(flags), "cmd_seq": cmd_seq,
            "data_seq": data_seq, "dout_seq": dout_seq, "crc_errors": crc_errors, "counters": counters}


def decode_info(payload: bytes) -> dict:
    if len(payload) != INFO_BYTES:
        raise ValueError(f"INFO reply must be {INFO_BYTES} bytes, got {len(payload)}")
    return dict(zip(INFO_FIELDS, struct.unpack(f"<{len(INFO_FIELDS)}I", payload)))
