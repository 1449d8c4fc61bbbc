"""Host driver for the NPU on a board: ``golden/link.py`` frames over a serial port.

``UartHost(config, link).run(program) -> Result`` is what ``Npu(config, "uart", port=...)`` calls.
The link is any object with ``write(bytes)`` and ``read(timeout_s) -> bytes`` (whatever arrived,
possibly nothing), and optionally ``monotonic()`` (its clock, for the timeouts): ``SerialLink`` wraps
pyserial for a real board, ``sim/uart_sim.py`` a simulated serial line.

Protocol use (see ``golden/link.py``): ``RESET`` first (so every run starts from reset, like the
other backends), then the command and data-in frames, at most one unacknowledged frame per stream
(the two streams advance independently, so a LOAD waiting for data never blocks the data behind
it), collecting ``DOUT`` frames as they come; then ``STATUS`` until the NPU is idle, which also
returns the counters. Each stream numbers its frames 0, 1, 2, ... (mod 256) from the RESET on, and
an ACK or NAK counts for a pending frame only if its stream (the ACK's payload, the NAK's type) and
its sequence number both match. A NAK or a missing ACK resends the frame (the device drops a
duplicate of the frame it accepted last on that stream). ``STATUS``, ``INFO`` and ``RESET`` requests
carry a number of their own that the device echoes, so a late reply to an earlier request (or to
an earlier run's RESET) is never taken for the current one. Device frames are accepted only with
their type's exact length, so a false ``SYNC`` in line noise costs one byte, not a frame.

A lost ``DOUT`` frame cannot be resent by the device: a gap in the ``DOUT`` numbers, or a final
STATUS whose data-out count differs from the frames received, fails the attempt. The whole run is
then repeated from reset (``retries``), but only if that is sure to give the same result: RESET
keeps the SRAM and LUT contents the failed attempt changed, so a program whose result depends on
them (it reads memory it did not write first; checked with the golden model, see
``restartable``) ends in ``LinkError`` instead. A run has an overall time limit (``run_timeout``,
on the link's clock): past it, ``UartTimeout`` (a ``TimeoutError``) says which frames were still
waiting.
"""
from __future__ import annotations

import time

import numpy as np

from opennpu.config import NpuConfig
from opennpu.golden.isa import ErrorCode
from opennpu.golden.link import (INFO_BYTES, STATUS_BYTES, STREAM_TYPES, FrameParser, FrameType, NakReason,
                                 StatusFlag, decode_info, decode_status, encode_frame, stream_of)
from opennpu.golden.model import GoldenNpu, reported_counters
from opennpu.golden.program import Program, ProgramError, Result

from .driver import program_words

__all__ = ["LinkError", "UartTimeout", "SerialLink", "UartHost", "DeviceFrameParser", "restartable", "run_uart"]

_COMMAND_BYTES = 16


class LinkError(RuntimeError):
    """The board did not answer as the protocol requires (after retries)."""


class UartTimeout(TimeoutError):
    """A run did not finish within the host's ``run_timeout`` (not retried: the board may be busy)."""


class DeviceFrameParser(FrameParser):
    """``FrameParser`` for device -> host frames: a frame counts only with a device frame type and that
    type's exact payload length; anything else is skipped one byte at a time at once, so a ``SYNC``
    byte in line noise whose false header claims a long payload never swallows the frames behind it."""

    def __init__(self, bus_bytes: int):
        super().__init__(max_payload=max(STATUS_BYTES, INFO_BYTES, bus_bytes))
        self._lengths = {FrameType.ACK: 1, FrameType.NAK: 2, FrameType.DOUT: bus_bytes,
                         FrameType.STATUS_REPLY: STATUS_BYTES, FrameType.INFO_REPLY: INFO_BYTES}

    def _plausible(self, frame_type: int, length: int) -> bool:
        return self._lengths.get(frame_type) == length


def restartable(config: NpuConfig, program: Program) -> bool:
    """Whether repeating ``program`` after RESET gives its result whatever an earlier attempt left in
    the SRAMs, the LUT and the elementwise tables (which RESET keeps): on the golden model, runs on memories filled with
    random values (two fills) must equal the run on zeroed memories. A program that writes what it
    reads first passes; one that reads memory it never wrote (an SRAM dump) does not."""
    try:
        base = GoldenNpu(config).run(program)
    except ProgramError:
        return False
    rng = np.random.default_rng(0x5EED)
    for _ in range(2):
        npu = GoldenNpu(config)
        npu.act[:] = rng.integers(0, 256, npu.act.shape)
        npu.wgt[:] = rng.integers(0, 256, npu.wgt.shape)
        npu.acc[:] = rng.integers(-(1 << 31), 1 << 31, npu.acc.shape)
        npu.lut[:] = rng.integers(-128, 128, npu.lut.shape)
        npu.ew_tables[:] = rng.integers(-(1 << 31), 1 << 31, npu.ew_tables.shape)
        if npu.run(program) != base:
            return False
    return True


class SerialLink:
    """A serial port through pyserial (imported lazily: an optional dependency)."""

    def __init__(self, port: str, baud: int = 115_200):
        try:
            import serial
        except ImportError as error:
            raise ImportError("the uart backend needs pyserial (pip install pyserial)") from error
        self._serial = serial.Serial(port, baud, timeout=0)

    def write(self, data: bytes):
        self._serial.write(data)
        self._serial.flush()

    def read(self, timeout: float) -> bytes:
        self._serial.timeout = timeout
        first = self._serial.read(1)
        if not first:
            return b""
        self._serial.timeout = 0
        return first + self._serial.read(self._serial.in_waiting or 0)

    def close(self):
        self._serial.close()


class UartHost:
    """Runs programs on a board through ``link``.

    Parameters
    ----------
    config : NpuConfig
        Must match the board's (checked against its INFO reply).
    link : object with ``write(bytes)`` and ``read(timeout_s) -> bytes``
    timeout : float
        Seconds without any answer before a frame is resent or the status is polled.
    retries : int
        Attempts per frame, and attempts per run when a data-out frame was lost.
    run_timeout : float
        Seconds one ``run`` may take, every attempt included; past it, ``UartTimeout``.
    """

    def __init__(self, config: NpuConfig, link, *, timeout: float = 0.5, retries: int = 8,
                 run_timeout: float = 600.0):
        if not run_timeout > 0:
            raise ValueError(f"run_timeout must be > 0 seconds, got {run_timeout!r}")
        self.config, self.link = config, link
        self.timeout, self.retries, self.run_timeout = timeout, retries, run_timeout
        self._deadline = float("inf")
        self._parser = DeviceFrameParser(config.bus_bytes)
        self._frames: list[tuple[int, int, bytes]] = []
        self._seq = [0, 0]                # next sequence number of each stream (commands, data-in)
        self._info = None
        self.last_status = None
        self.resent = 0                   # frames sent again after a NAK or a timeout
        self.attempts = 0                 # attempts of the last run (more than 1: repeated from reset)
        self._request_seq = 0             # number of the next STATUS / INFO / RESET request
        self._sent_commands = False       # this attempt has sent a command frame

    def _now(self) -> float:
        """Seconds on the link's clock (a simulated link counts simulated time)."""
        clock = getattr(self.link, "monotonic", None)
        return clock() if clock is not None else time.monotonic()

    # -- frames -----------------------------------------------------------------------------------
    def _next_seq(self, stream: int) -> int:
        seq = self._seq[stream]
        self._seq[stream] = (seq + 1) & 0xFF
        return seq

    def _send(self, ftype, seq=0, payload=b""):
        self.link.write(encode_frame(ftype, seq, payload))

    def _poll(self, timeout: float) -> bool:
        """Read what arrives within ``timeout`` into the frame queue; True if any frame came."""
        frames = self._parser.feed(self.link.read(timeout))
        self._frames += frames
        return bool(frames)

    def _take(self, ftype: int, timeout: float):
        """The first frame of ``ftype`` (other frames stay queued), or None after ``timeout``."""
        deadline = self._now() + timeout
        while True:
            for i, frame in enumerate(self._frames):
                if frame[0] == ftype:
                    return self._frames.pop(i)
            left = deadline - self._now()
            if left <= 0:
                return None
            self._poll(min(left, 0.05))

    def _request(self, ftype: int, reply: int):
        """Send a request until its reply comes: the reply type, with the request's number echoed (an
        ACK also naming ``ftype``); replies to earlier requests are dropped. Each attempt has its own
        number."""
        for _ in range(self.retries):
            seq = self._request_seq
            self._request_seq = (seq + 1) & 0xFF
            self._send(ftype, seq)
            deadline = self._now() + self.timeout
            while True:
                frame = self._take(reply, max(0.0, deadline - self._now()))
                if frame is None:
                    break
                if frame[1] == seq and (reply != FrameType.ACK or frame[2] == bytes([ftype])):
                    return frame
        raise LinkError(f"no {FrameType(reply).name} reply to {FrameType(ftype).name} "
                        f"after {self.retries} attempts")

    # -- requests ----------------------------------------------------------------------------------
    def info(self) -> dict:
        return decode_info(self._request(FrameType.INFO, FrameType.INFO_REPLY)[2])

    def status(self) -> dict:
        return decode_status(self._request(FrameType.STATUS, FrameType.STATUS_REPLY)[2])

    def reset(self):
        """Reset the NPU and the link's sequence numbers; drops frames still queued."""
        self._request(FrameType.RESET, FrameType.ACK)
        self._frames.clear()              # all sent before the RESET was done
        self._seq = [0, 0]

    def check_config(self):
        """Compare the board's INFO reply with ``config``; raises ValueError on a mismatch."""
        info = self._info = self._info or self.info()
        c = self.config
        want = {"rows": c.rows, "cols": c.cols, "bus_bytes": c.bus_bytes, "act_depth": c.act_depth,
                "wgt_depth": c.wgt_depth, "acc_depth": c.acc_depth}
        wrong = {k: (v, info[k]) for k, v in want.items() if info[k] != v}
        if wrong:
            raise ValueError("the board's NPU does not match the configuration: "
                             + ", ".join(f"{k}: config {a}, board {b}" for k, (a, b) in wrong.items()))
        return info

    # -- programs ----------------------------------------------------------------------------------
    def _frames_of(self, program: Program, frame_max: int):
        words = program.words()               # checked by run()
        per = frame_max // _COMMAND_BYTES
        cmd = []
        for i in range(0, len(words), per):
            chunk = words[i:i + per]
            payload = b"".join(w.to_bytes(_COMMAND_BYTES, "little") for w in chunk)
            cmd.append((FrameType.CMD_LAST if i + per >= len(words) else FrameType.CMD, payload))
        step = frame_max - frame_max % self.config.bus_bytes
        data = [(FrameType.DATA, program.data_in[i:i + step]) for i in range(0, len(program.data_in), step)]
        return cmd, data

    def _run_once(self, program: Program) -> Result:
        info = self.check_config()
        self.reset()
        queues = self._frames_of(program, info["frame_max"])
        pending = [None, None]           # per stream: (seq, type, payload, attempts, sent_at)
        position = [0, 0]
        outputs = []
        while True:
            self._check_deadline(f"command frames sent {position[0]} of {len(queues[0])}, "
                                 f"data-in frames sent {position[1]} of {len(queues[1])}")
            now = self._now()
            for s in range(2):
                if pending[s] is None and position[s] < len(queues[s]):
                    ftype, payload = queues[s][position[s]]
                    position[s] += 1
                    pending[s] = [self._next_seq(s), ftype, payload, 1, now]
                    self._sent_commands |= s == 0
                    self._send(ftype, pending[s][0], payload)
            if pending == [None, None]:
                break
            self._poll(min(0.02, self.timeout))     # no longer than a frame may wait
            while self._frames:
                ftype, seq, payload = self._frames.pop(0)
                if ftype == FrameType.DOUT:
                    outputs.append(self._dout_payload(seq, len(outputs), payload))
                    continue
                for s, p in enumerate(pending):
                    if p is None or seq != p[0] or not payload or stream_of(payload[0]) != s:
                        continue
                    if ftype == FrameType.ACK and payload == bytes([STREAM_TYPES[s][0]]):
                        pending[s] = None
                    elif ftype == FrameType.NAK:
                        if payload[-1] == NakReason.BUSY:     # the first copy is still draining
                            p[4] = self._now()
                            continue
                        self._resend(p)
            for s, p in enumerate(pending):
                if p is not None and self._now() - p[4] > self.timeout:
                    status = self.status()
                    last = status["cmd_seq" if s == 0 else "data_seq"]
                    busy = status["flags"] & (StatusFlag.CMD_BUSY if s == 0 else StatusFlag.DATA_BUSY)
                    if last == p[0] and not busy:
                        pending[s] = None                   # the ACK was lost
                    elif last == p[0] and s == 1 and status["flags"] & StatusFlag.IDLE and \
                            pending[0] is None and position[0] == len(queues[0]):
                        raise ProgramError(f"the NPU finished the program without taking all data-in: "
                                           f"data-in frame {position[1]} of {len(queues[1])} never drained")
                    elif last == p[0]:
                        p[4] = self._now()              # still draining into a busy NPU
                    else:
                        self._resend(p)
        # Everything is inside the NPU: wait until it is idle (STATUS replies come after every DOUT
        # frame sent before them, so the outputs are complete when one says idle).
        while True:
            self._check_deadline("every frame delivered, the NPU still busy")
            status = self.status()
            while self._frames:
                ftype, seq, payload = self._frames.pop(0)
                if ftype == FrameType.DOUT:
                    outputs.append(self._dout_payload(seq, len(outputs), payload))
            if status["flags"] & StatusFlag.IDLE:
                break
        got = len(outputs)
        if status["dout_seq"] != got & 0xFF:
            # Data-out frames after the last one received were lost (or are late): wait once more.
            self._poll(self.timeout)
            while self._frames:
                ftype, seq, payload = self._frames.pop(0)
                if ftype == FrameType.DOUT:
                    outputs.append(self._dout_payload(seq, len(outputs), payload))
            if status["dout_seq"] != len(outputs) & 0xFF:
                raise LinkError(f"data-out frames lost: the device sent {status['dout_seq']} (mod 256), "
                                f"{len(outputs)} arrived")
        self.last_status = status
        if status["flags"] & (StatusFlag.OVERRUN | StatusFlag.FRAMING):
            raise LinkError(f"the board's receiver reported {status['flags']!r}")
        return Result(b"".join(outputs), reported_counters(self.config, status["counters"]), ErrorCode(status["error"]),
                      status["rejected"])

    @staticmethod
    def _dout_payload(seq: int, index: int, payload: bytes) -> bytes:
        """The payload of data-out frame number ``index`` of this run; raises if ``seq`` shows a gap."""
        if seq != index & 0xFF:
            raise LinkError(f"data-out frame {index & 0xFF} lost (got {seq})")
        return payload

    def _check_deadline(self, state: str):
        if self._now() > self._deadline:
            raise UartTimeout(f"run not finished after {self.run_timeout} s ({state})")

    def _resend(self, p):
        self.resent += 1
        p[3] += 1
        if p[3] > self.retries:
            raise LinkError(f"{FrameType(p[1]).name} frame {p[0]} not accepted after {self.retries} attempts")
        p[4] = self._now()
        self._send(p[1], p[0], p[2])

    def run(self, program: Program) -> Result:
        """Run ``program`` from reset; returns data-out bytes, counters and status like every backend."""
        program_words(self.config, program)
        self._deadline = self._now() + self.run_timeout
        can_repeat = None
        for attempt in range(self.retries):
            self.attempts = attempt + 1
            self._sent_commands = False
            try:
                return self._run_once(program)
            except LinkError as error:
                if attempt == self.retries - 1:
                    raise
                if self._sent_commands:
                    if can_repeat is None:
                        can_repeat = restartable(self.config, program)
                    if not can_repeat:
                        raise LinkError(f"{error}; the run cannot be repeated from reset: RESET keeps the "
                                        f"SRAM and LUT contents, and this program reads memory it does not "
                                        f"write first") from error
        raise AssertionError("unreachable")


def run_uart(config: NpuConfig, program: Program, *, port: str, baud: int = 115_200, **options) -> Result:
    """``Npu(config, "uart", port=...)``: one run on a board through pyserial."""
    link = SerialLink(port, baud)
    try:
        return UartHost(config, link, **options).run(program)
    finally:
        link.close()
