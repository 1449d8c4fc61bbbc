"""Fault injection on the host link: a byte channel that damages frames both ways, and a campaign.

``FaultyLink(link, rng, ...)`` sits between ``sim/uart_host.UartHost`` and a link (``VerilatorLink``:
the verilated NPU behind the real ``HostLink``). Per frame, with a given probability in each
direction, it injects one fault:

``flip``       1-3 random bits flipped anywhere in the frame (SYNC, header, payload or CRC);
``drop``       1-3 random bytes removed;
``truncate``   the frame cut short at a random byte;
``garbage``    1-24 random bytes before the frame, half the time starting with ``SYNC`` (a false
               frame start whose header may claim a long payload);
``reorder``    the frame held back and delivered after the next frame in that direction (or after
               the receiving side has waited twice);
``duplicate``  the frame delivered twice, the copy either at once or after the next frame.

Host -> device frames are the driver's ``write`` calls (one frame each); device -> host frames are cut
from the device's clean byte stream by their length field before any damage.

``select(direction, frame) -> kind or None``, if given, chooses the faults instead (targeted tests).

``run_campaign`` runs programs through it and classifies every run: ``correct`` (outputs, error code,
rejected count and counters equal the golden model's; ``cycles`` and ``stall_cycles`` exceed the
golden ones by the same stall count, as on every stalled stream), ``error`` (the driver raised a
typed error: ``LinkError``, ``UartTimeout``), ``wrong`` (an OK return with any other result), or
``hang`` (the run passed the hard limit on simulated cycles or wall time without ending, or raised
anything else).
"""
from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from opennpu.config import NpuConfig
from opennpu.golden.link import CRC_BYTES, HEADER_BYTES, SYNC
from opennpu.golden.model import GoldenNpu
from opennpu.golden.program import Program, Result

from .uart_host import LinkError, UartTimeout
from .verilator_link import LinkHang, VerilatorLink, build_link_harness, host_timeouts
from .uart_host import UartHost

__all__ = ["FAULT_KINDS", "DIRECTIONS", "FaultyLink", "RunOutcome", "CampaignFigures", "compare", "run_one",
           "run_campaign"]

FAULT_KINDS = ("flip", "drop", "truncate", "garbage", "reorder", "duplicate")
DIRECTIONS = ("to_device", "from_device")


class FaultyLink:
    """``link`` with faults injected on whole frames, each direction at its own rate (per frame)."""

    def __init__(self, link, rng: random.Random, *, rate_to_device: float = 0.0, rate_from_device: float = 0.0,
                 kinds=FAULT_KINDS, select=None):
        self.link, self.rng, self.select = link, rng, select
        self.rates = {"to_device": rate_to_device, "from_device": rate_from_device}
        self.kinds = tuple(kinds)
        self.injected: Counter = Counter()          # (direction, kind) -> count
        self._held = {d: [] for d in DIRECTIONS}     # frames held back: [bytes, reads waited]
        self._down = bytearray()                    # device bytes not yet cut into a frame

    def monotonic(self) -> float:
        return self.link.monotonic()

    # -- faults --------------------------------------------------------------------------------------
    def _damage(self, direction: str, frame: bytes) -> list[bytes]:
        """What goes on the line now for ``frame`` (held-back frames are kept in ``_held``)."""
        rng = self.rng
        released = [held[0] for held in self._held[direction]]   # frames held behind this one
        self._held[direction].clear()
        if self.select is not None:            # a chosen fault (regression tests): kind or None
            kind = self.select(direction, frame)
        else:
            kind = rng.choice(self.kinds) if rng.random() < self.rates[direction] else None
        if kind is None:
            return [frame] + released
        self.injected[direction, kind] += 1
        out = bytearray(frame)
        if kind == "flip":
            for _ in range(rng.randint(1, 3)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif kind == "drop":
            for _ in range(min(len(out) - 1, rng.randint(1, 3))):
                del out[rng.randrange(len(out))]
        elif kind == "truncate":
            del out[rng.randint(1, len(out) - 1):]
        elif kind == "garbage":
            junk = bytearray(rng.randbytes(rng.randint(1, 24)))
            if rng.random() < 0.5:
                junk[0] = SYNC
            out[:0] = junk
        elif kind == "reorder":
            self._held[direction].append([frame, 0])
            return released
        elif kind == "duplicate":
            if rng.random() < 0.5:
                return [frame, frame] + released
            self._held[direction].append([frame, 0])
        return [bytes(out)] + released

    def _overdue(self, direction: str) -> list[bytes]:
        """Held frames whose receiver has waited twice: delivered late rather than never."""
        out = []
        for held in list(self._held[direction]):
            held[1] += 1
            if held[1] > 2:
                self._held[direction].remove(held)
                out.append(held[0])
        return out

    # -- the link interface ----------------------------------------------------------------------------
    def write(self, data: bytes):
        for chunk in self._damage("to_device", bytes(data)):
            self.link.write(chunk)

    def read(self, timeout: float) -> bytes:
        for chunk in self._overdue("to_device"):
            self.link.write(chunk)
        self._down += self.link.read(timeout)
        out = []
        while len(self._down) >= HEADER_BYTES:
            if self._down[0] != SYNC:            # the device's stream is clean: never happens
                out.append(bytes(self._down[:1]))
                del self._down[:1]
                continue
            end = HEADER_BYTES + (self._down[3] | self._down[4] << 8) + CRC_BYTES
            if len(self._down) < end:
                break
            frame = bytes(self._down[:end])
            del self._down[:end]
            out += self._damage("from_device", frame)
        out += self._overdue("from_device")
        return b"".join(out)


# -- the campaign ------------------------------------------------------------------------------------

def compare(result: Result, golden: Result) -> list[str]:
    """What differs between a link run and the golden run (empty: correct)."""
    wrong = []
    if result.outputs != golden.outputs:
        wrong.append(f"outputs ({len(result.outputs)} bytes, golden {len(golden.outputs)})")
    if (result.error, result.rejected) != (golden.error, golden.rejected):
        wrong.append(f"status {result.error!r}/{result.rejected}, golden {golden.error!r}/{golden.rejected}")
    stalls = result.counters.get("stall_cycles", 0) - golden.counters.get("stall_cycles", 0)
    for name, value in golden.counters.items():
        expected = value + stalls if name in ("cycles", "stall_cycles") else value
        if result.counters.get(name) != expected:
            wrong.append(f"counter {name} = {result.counters.get(name)}, golden {expected}")
    return wrong


@dataclass
class RunOutcome:
    kind: str                      # correct | error | wrong | hang
    detail: str = ""
    injected: Counter = field(default_factory=Counter)
    resent: int = 0
    attempts: int = 1
    cycles: int = 0


def run_one(exe, config: NpuConfig, program: Program, golden: Result, rng: random.Random, *,
            rate_to_device: float, rate_from_device: float, kinds=FAULT_KINDS, byte_cycles: int = 12,
            clk_hz: float = 12e6, run_timeout: float = 2.0, max_cycles: int | None = None,
            wall_limit: float = 120.0, **host_options) -> RunOutcome:
    """One run of ``program`` through a fresh model and a ``FaultyLink``; classified against ``golden``."""
    if max_cycles is None:
        max_cycles = int(2 * run_timeout * clk_hz) + 1_000_000
    wall_deadline = time.monotonic() + wall_limit
    with VerilatorLink(exe, byte_cycles=byte_cycles, clk_hz=clk_hz, max_cycles=max_cycles) as raw:
        link = FaultyLink(raw, rng, rate_to_device=rate_to_device, rate_from_device=rate_from_device, kinds=kinds)
        read = link.read

        def read_with_wall_limit(timeout):
            if time.monotonic() > wall_deadline:
                raise LinkHang(f"no end after {wall_limit} s of wall time")
            return read(timeout)

        link.read = read_with_wall_limit
        host = UartHost(config, link, run_timeout=run_timeout, **(host_timeouts(byte_cycles, clk_hz) | host_options))
        outcome = RunOutcome("hang")
        try:
            result = host.run(program)
        except (LinkError, UartTimeout) as error:
            outcome = RunOutcome("error", f"{type(error).__name__}: {error}")
        except LinkHang as error:
            outcome = RunOutcome("hang", str(error))
        except Exception as error:            # anything untyped counts as a failure, like a hang
            outcome = RunOutcome("hang", f"crashed: {type(error).__name__}: {error}")
        else:
            wrong = compare(result, golden)
            outcome = RunOutcome("wrong", "; ".join(wrong)) if wrong else RunOutcome("correct")
        outcome.injected, outcome.resent, outcome.cycles = link.injected, host.resent, raw.cycle
        outcome.attempts = getattr(host, "attempts", 1)
        return outcome


@dataclass
class CampaignFigures:
    runs: int = 0
    correct: int = 0
    error: int = 0
    wrong: int = 0
    hang: int = 0
    injected: Counter = field(default_factory=Counter)
    resent: int = 0
    reruns: int = 0
    frames: tuple = (0, 0)          # most command / data-in frames in one program
    details: list = field(default_factory=list)

    @property
    def faults(self) -> int:
        return sum(self.injected.values())

    def add(self, outcome: RunOutcome):
        self.runs += 1
        setattr(self, outcome.kind, getattr(self, outcome.kind) + 1)
        self.injected += outcome.injected
        self.resent += outcome.resent
        self.reruns += outcome.attempts - 1
        if outcome.kind != "correct":
            self.details.append(f"{outcome.kind}: {outcome.detail}")

    def report(self) -> str:
        lines = [f"runs {self.runs}: correct {self.correct}, raised an error {self.error}, "
                 f"wrong results {self.wrong}, hangs {self.hang}",
                 f"faults injected {self.faults} (frames resent {self.resent}, whole runs repeated {self.reruns}); "
                 f"longest program: {self.frames[0]} command frames, {self.frames[1]} data-in frames"]
        for direction in DIRECTIONS:
            per = ", ".join(f"{k} {self.injected[direction, k]}" for k in FAULT_KINDS)
            lines.append(f"  {direction}: {per}")
        causes = Counter(re.sub(r"\d+", "N", d) for d in self.details)
        lines += [f"  {n} x {cause}" for cause, n in causes.most_common()]
        return "\n".join(lines)


def frame_counts(config: NpuConfig, program: Program, frame_max: int) -> tuple[int, int]:
    per = frame_max // 16
    step = frame_max - frame_max % config.bus_bytes
    return -(-len(program.commands) // per), -(-len(program.data_in) // step)


def run_campaign(config: NpuConfig, programs, *, seed: int = 0, frame_max: int = 16, byte_cycles: int = 12,
                 rates=((0.03, 0.005),), progress=None, **options) -> CampaignFigures:
    """Every program once per ``(rate_to_device, rate_from_device)`` pair; returns the figures."""
    exe = build_link_harness(config, frame_max=frame_max, timeout=64 * byte_cycles)
    figures = CampaignFigures()
    rng = random.Random(seed)
    for index, program in enumerate(programs):
        golden = GoldenNpu(config).run(program)
        counts = frame_counts(config, program, frame_max)
        figures.frames = tuple(max(a, b) for a, b in zip(figures.frames, counts))
        for up, down in rates:
            outcome = run_one(exe, config, program, golden, random.Random(rng.getrandbits(64)),
                              rate_to_device=up, rate_from_device=down, byte_cycles=byte_cycles, **options)
            figures.add(outcome)
            if progress:
                progress(index, outcome)
    return figures
