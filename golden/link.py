"""The board's host-link wire protocol: frames, checksum, sequence numbers and payload layouts.

One definition shared by the RTL (``hdl/host_link.py``) and the host driver (``sim/uart_host.py``),
like ``isa.py`` is for commands. The link carries the NPU's three streams (commands, data-in,
data-out) plus status / counter readback over one full-duplex byte channel (a UART).

Frame (both directions)::

    SYNC  TYPE  SEQ  LEN_LO  LEN_HI  PAYLOAD[LEN]  CRC[4]

``SYNC`` = 0xA5; ``CRC`` is CRC-32 (IEEE 802.3, as ``zlib.crc32``), little-endian, over every byte
from ``TYPE`` to the end of the payload. Running the CRC over the frame *including* its four CRC
bytes leaves the fixed residue ``CRC_RESIDUE`` in the (un-inverted) register, which is what the RTL
checks. Every error pattern of up to 3 bits in a frame and every burst of up to 32 bits is caught;
any other corruption passes with probability 2^-32 per corrupted frame.

Host -> device
--------------
===========  ======================================================================================
``CMD``      ``LEN`` = 16·n, n commands (128-bit little-endian words, ``isa.encode``).
``CMD_LAST`` like ``CMD``; its final command is the last one of the program (``CommandBeat.last``).
``DATA``     ``LEN`` = bus_bytes·n: n data-in beats, little-endian.
``STATUS``   ``LEN`` = 0: asks for a ``STATUS`` reply (``SEQ``: any number, echoed by the reply).
``INFO``     ``LEN`` = 0: asks for an ``INFO`` reply (``SEQ`` echoed likewise).
``RESET``    ``LEN`` = 0: resets the NPU (counters, SRAM contents stay) and the link's sequence
             numbers and buffers; answered with ``ACK`` (``SEQ`` echoed).
===========  ======================================================================================

Streams and sequence numbers (stop-and-wait per stream): commands (``CMD`` / ``CMD_LAST``) and
data-in (``DATA``) are two independent streams, each numbered by its own 8-bit ``SEQ``: 0 for the
first frame after ``RESET``, then +1 per frame (mod 256). The device holds one frame buffer per
stream (``frame_max`` bytes): a frame is checked against its CRC before any of it reaches the NPU,
so it must be held until its last byte, and only one frame per stream is in the buffer at a time.
The host sends a stream's next frame only once the previous one was acknowledged. For a frame whose
CRC, length and type are good, the device compares ``SEQ`` with ``last``, the last number it
accepted on that stream (255 after ``RESET``):

* ``SEQ == last + 1``: the next frame. If the buffer is free, the frame is accepted: the payload is
  forwarded into the NPU stream and ``ACK`` (``SEQ`` echoed, payload = ``CMD`` or ``DATA``) is sent
  once the whole payload is inside the NPU. If the buffer is still draining the previous frame, it
  is answered with ``NAK`` ``BUSY`` and dropped.
* ``SEQ == last``: a retransmission of the frame already accepted (its ``ACK`` was lost): it is not
  forwarded again; it is acknowledged again once the buffer is free (the first copy's ``ACK`` comes
  then anyway if it is still draining).
* any other ``SEQ``: a stale or reordered frame: ``NAK`` ``SEQ``, dropped.

So every frame reaches the NPU at most once and in order, and a frame whose CRC failed never
reaches it. A frame with a bad CRC, a bad length or an unknown type is answered with ``NAK``
(payload: type, reason) and dropped. After ``timeout`` idle cycles in the middle of a frame the
receiver drops it and hunts for ``SYNC``.

Device -> host
--------------
==========  ===========================================================================================
``ACK``     payload: [acknowledged stream type: ``CMD`` (for ``CMD`` and ``CMD_LAST``), ``DATA`` or
            ``RESET``]; ``SEQ`` = its sequence number.
``NAK``     payload: [type, reason]; ``SEQ`` and type = those of the rejected frame as received.
``DOUT``    payload: one data-out beat (bus_bytes bytes); ``SEQ`` counts DOUT frames (0 after
            ``RESET``, wraps at 256), so the host notices a lost frame.
``STATUS``  ``STATUS_LAYOUT`` followed by the 64-bit counters (``COUNTER_NAMES`` order), the final
            values when the IDLE flag is set (while the NPU is busy they may lag or be garbled);
            ``SEQ`` = the request's, so the host can tell the reply to its latest request from a
            late reply to an earlier one.
``INFO``    ``INFO_FIELDS``, 32-bit little-endian each; ``SEQ`` = the request's.
==========  ===========================================================================================
"""
from __future__ import annotations

import enum
import struct
import zlib

from .program import COUNTER_NAMES

__all__ = ["SYNC", "HEADER_BYTES", "FrameType", "NakReason", "StatusFlag", "STATUS_HEADER_BYTES",
           "STATUS_BYTES", "INFO_FIELDS", "INFO_BYTES", "PROTOCOL_VERSION", "CRC_BYTES", "CRC_POLY",
           "CRC_RESIDUE", "crc32", "STREAM_TYPES", "stream_of", "encode_frame", "FrameParser", "decode_status", "decode_info"]

SYNC = 0xA5
HEADER_BYTES = 5                     # SYNC TYPE SEQ LEN_LO LEN_HI
CRC_BYTES = 4
PROTOCOL_VERSION = 2
CRC_POLY = 0xEDB88320                #: CRC-32 polynomial, bit-reflected (LSB-first shift register)
CRC_RESIDUE = 0xDEBB20E3             #: register after a frame and its own CRC bytes (init ~0, no final xor)


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
    SEQ = 5          # neither the stream's next sequence number nor the last accepted one


class StatusFlag(enum.IntFlag):
    IDLE = 0x01          # the NPU is idle (no program open, nothing executing, no output pending)
    CMD_BUSY = 0x02      # the command buffer is still draining into the NPU
    DATA_BUSY = 0x04     # the data-in buffer is still draining into the NPU
    OVERRUN = 0x08       # sticky: a received byte was lost (receiver not read in time)
    FRAMING = 0x10       # sticky: a byte without a stop bit was received


#: STATUS reply header (then 8 bytes per counter): error, rejected, flags, last accepted command /
#: data-in sequence numbers (255 after RESET), next DOUT sequence number, count of frames NAKed for a
#: bad CRC (saturates at 255).
STATUS_HEADER = struct.Struct("<BHBBBBB")
STATUS_HEADER_BYTES = STATUS_HEADER.size
STATUS_BYTES = STATUS_HEADER_BYTES + 8 * len(COUNTER_NAMES)

INFO_FIELDS = ("version", "rows", "cols", "bus_bytes", "act_depth", "wgt_depth", "acc_depth", "frame_max")
INFO_BYTES = 4 * len(INFO_FIELDS)


#: The host -> device frame types of each stream (0: commands, 1: data-in); an ACK names the first.
STREAM_TYPES = ((FrameType.CMD, FrameType.CMD_LAST), (FrameType.DATA,))


def stream_of(ftype: int) -> int | None:
    """The stream (0: commands, 1: data-in) a frame type belongs to, or None."""
    return next((s for s, types in enumerate(STREAM_TYPES) if ftype in types), None)


def crc32(data: bytes) -> int:
    """The frame check: CRC-32/IEEE (``zlib.crc32``)."""
    return zlib.crc32(data)


def encode_frame(ftype: int, seq: int, payload: bytes = b"") -> bytes:
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number must be 0..255, got {seq}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"frame payload is at most 65535 bytes, got {len(payload)}")
    body = bytes([int(ftype), seq, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    return bytes([SYNC]) + body + crc32(body).to_bytes(CRC_BYTES, "little")


class FrameParser:
    """Incremental receiver: ``feed(bytes)`` returns the complete frames as ``(type, seq, payload)``.

    Frames with a bad CRC are counted in ``crc_errors`` and skipped (the parser resynchronises on the
    next ``SYNC`` byte after the bad frame's first byte).
    """

    def __init__(self, max_payload: int = 4096):
        self._buf = bytearray()
        self._max = max_payload
        self.crc_errors = 0

    def _plausible(self, frame_type: int, length: int) -> bool:
        """Whether a header with this type and payload length may start a frame."""
        return length <= self._max

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
            if not self._plausible(self._buf[1], length):
                del self._buf[:1]
                continue
            end = HEADER_BYTES + length + CRC_BYTES
            if len(self._buf) < end:
                return frames
            body = bytes(self._buf[1:end - CRC_BYTES])
            if crc32(body) != int.from_bytes(self._buf[end - CRC_BYTES:end], "little"):
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
