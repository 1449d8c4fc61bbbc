"""Every backend refuses the same unrunnable programs up front with the same typed error, and no
driver hangs: pysim's cycle limit holds while commands are still being sent, the UART host has an
overall time limit (issue 18, defects 3, 4 and 6)."""
import random

import numpy as np
import pytest

from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.deps import order_program
from opennpu.golden.isa import Buf, Command, ErrorCode, Opcode, encode
from opennpu.golden.model import GoldenNpu
from opennpu.golden.program import Program, ProgramError
from opennpu.sim import pysim, uart_host
from opennpu.sim import verilator as vl
from opennpu.sim.driver import BackendUnavailable, Npu, data_in_takes, program_words
from opennpu.sim.uart_host import UartHost, UartTimeout
from opennpu.sim.uart_sim import run_uart_pysim

from programs import random_program

CONFIG = NpuConfig(rows=2, cols=2, act_depth=32, wgt_depth=16, acc_depth=16)
CONFIG_OS = NpuConfig(rows=2, cols=2, dataflow="os", precisions=("int8", "a8w4", "a4w4"), act_depth=32,
                      wgt_depth=16, acc_depth=16)
FENCE = Command(Opcode.FENCE)


def every_backend_raises(program, error, match):
    """The golden model, pysim, Verilator and the UART host all refuse ``program`` before running
    anything (none of them needs a tool, a build or a board for that); returns the messages."""
    runs = {"golden": lambda: Npu(CONFIG, "golden").run(program),
            "pysim": lambda: pysim.run_pysim(CONFIG, program),
            "verilator": lambda: vl.run_verilator(CONFIG, program),
            "uart": lambda: UartHost(CONFIG, link=None).run(program)}
    messages = {}
    for name, run in runs.items():
        with pytest.raises(error, match=match) as info:
            run()
        messages[name] = str(info.value)
    assert len(set(messages.values())) == 1, messages
    return messages["golden"]


# -- defect 6: command words outside 128 bits, or not integers ---------------------------------------

@pytest.mark.parametrize("word", [3.7, 2.0, True, False, -1, 1 << 128, "10", None, np.float64(10)])
def test_bad_command_word_is_refused_by_every_backend(word):
    program = Program([FENCE, word, FENCE])
    message = every_backend_raises(program, ValueError, "command 1 is")
    assert repr(word) in message
    with pytest.raises(ValueError, match="command 1 is"):
        GoldenNpu(CONFIG).run(program)              # the golden model itself, without the driver


def test_integer_words_of_any_int_type_are_accepted():
    words = [FENCE.encode(), np.int64(FENCE.encode()), (1 << 128) - 1]
    assert Program(words).words() == [FENCE.encode(), FENCE.encode(), (1 << 128) - 1]


# -- defect 4: data-in shorter or longer than the LOADs take -----------------------------------------

def test_short_data_in_is_refused_by_every_backend():
    program = Program([Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=2), Command(Opcode.LOAD_LUT), FENCE],
                      bytes(2 * CONFIG.bus_bytes))
    message = every_backend_raises(program, ProgramError, "too short")
    assert "command 1 is the first left without its data" in message


def test_long_data_in_is_refused_by_every_backend():
    program = Program([FENCE], bytes(3 * CONFIG.bus_bytes))
    every_backend_raises(program, ProgramError, f"too long: .* take 0 bytes, it has {3 * CONFIG.bus_bytes}")


def test_rejected_load_data_is_consumed_and_dropped():
    """Defect 5: a rejected LOAD's data-in is consumed and dropped by the hardware (LD, ``discard``), so
    the next LOAD reads its own bytes, on every backend alike; a LOAD of no SRAM takes none."""
    bus = CONFIG.bus_bytes
    bad = Command(Opcode.LOAD, buf=Buf.ACT, addr=CONFIG.act_depth - 1, rows=2)      # past the end: rejected
    no_sram = encode(Command(Opcode.LOAD, buf=0, addr=0, rows=3)) | 3 << 4         # buf 3: rejected, no data
    assert data_in_takes(CONFIG, [bad.encode(), no_sram, Command(Opcode.LOAD_LUT).encode()]) == [2 * bus, 0, 256]
    good = Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=1)
    store = Command(Opcode.STORE, buf=Buf.ACT, addr=0, rows=1)
    junk, mine = bytes(range(1, 2 * bus + 1)), bytes(range(100, 100 + bus))
    program = order_program(Program([bad, no_sram, good, store], junk + mine), CONFIG)
    for backend in ("golden", "pysim", "verilator"):
        try:
            result = Npu(CONFIG, backend).run(program)
        except BackendUnavailable:
            continue
        assert result.outputs == mine[:CONFIG.act_word_bytes].ljust(bus, b"\0"), backend
        assert (result.error, result.rejected) == (ErrorCode.BAD_RANGE, 2), backend
        assert result.counters["dma_in_bytes"] == 3 * bus and result.counters["act_writes"] == 1, backend
    with pytest.raises(ProgramError, match="too short"):
        program_words(CONFIG, Program([bad, good], mine))


@pytest.mark.parametrize("config", [CONFIG, CONFIG_OS], ids=["ws", "os"])
def test_data_in_accounting_equals_the_golden_models(config):
    """The golden model raises unless data-in is exactly what it takes; so every program it runs
    (random ones with malformed words, compiled GEMMs) must pass the shared check."""
    for seed in range(60):
        program = random_program(config, random.Random(seed))
        GoldenNpu(config).run(program)
        assert program_words(config, program) == program.words()
    gp = build_gemm(config, random_gemm(5, 3, 3, "int8", "gelu", seed=1))
    assert sum(data_in_takes(config, gp.program.words())) == len(gp.program.data_in)


def test_pysim_cycle_limit_holds_while_commands_are_sent(monkeypatch):
    """Past the up-front check (bypassed here), a starved LOAD_LUT with commands queued behind it
    used to hang pysim: the limit was only checked after the last command was sent."""
    monkeypatch.setattr(pysim, "program_words", lambda config, program: program.words())
    program = Program([Command(Opcode.LOAD_LUT)] + [FENCE] * 40)
    with pytest.raises(TimeoutError, match="not idle after 300 cycles: it reached the cycle limit"):
        pysim.run_pysim(CONFIG, program, max_cycles=300)


# -- defect 3: the UART host never polls forever -----------------------------------------------------

def test_uart_run_has_an_overall_time_limit():
    gp = build_gemm(CONFIG, random_gemm(3, 3, 2, seed=1))
    with pytest.raises(UartTimeout, match="run not finished after 1e-05 s") as info:
        run_uart_pysim(CONFIG, gp.program, run_timeout=1e-5)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(ValueError, match="run_timeout"):
        UartHost(CONFIG, link=None, run_timeout=0)


def test_uart_leftover_data_in_is_an_error_not_a_hang(monkeypatch):
    """Past the up-front check (bypassed here), data-in the NPU never takes kept the host polling
    STATUS forever; now the host sees the NPU idle with data undelivered and says so. (Four beats:
    more than the NPU's data-in FIFO holds; a short frame timeout keeps the simulation short.)"""
    monkeypatch.setattr(uart_host, "program_words", lambda config, program: program.words())
    with pytest.raises(ProgramError, match="without taking all data-in: data-in frame 1 of 1 never drained"):
        run_uart_pysim(CONFIG, Program([FENCE], bytes(4 * CONFIG.bus_bytes)), timeout=6e-4, run_timeout=0.05)


# -- defect 9: the Verilator cache repairs incomplete entries and removes a killed build's leftovers --

@pytest.fixture
def fake_builds(tmp_path, monkeypatch):
    """A cache under ``tmp_path`` whose export and build are stand-ins; counts what they do."""
    monkeypatch.setenv("OPENNPU_CACHE", str(tmp_path))
    monkeypatch.setattr(vl, "find_tools", lambda: {"verilator": "v", "g++": "g", "make": "m", "perl": "p"})
    calls = {"export": 0, "build": 0}

    def export(config, directory):
        calls["export"] += 1
        (directory / f"{vl.TOP_NAME}.v").write_text("module opennpu_top; endmodule\n")
        (directory / "names.json").write_text('{"host": []}')

    def verilate(tools, verilog_path, work, mode, defines):
        calls["build"] += 1
        (work / "obj").mkdir()
        (work / "obj" / "harness").write_text("")

    monkeypatch.setattr(vl, "_export_verilog", export)
    monkeypatch.setattr(vl, "_verilate", verilate)
    return calls


def test_verilator_cache_missing_names_json_is_repaired(fake_builds):
    exe = vl.build_harness(CONFIG, "vcd")
    vdir = exe.parent.parent
    (vdir / "names.json").unlink()
    assert vl.build_harness(CONFIG, "vcd") == exe
    assert (vdir / "names.json").read_text() == '{"host": []}'
    assert fake_builds == {"export": 2, "build": 1}          # the harness itself was still good


def test_verilator_cache_removes_a_killed_builds_leftovers(fake_builds):
    exe = vl.build_harness(CONFIG)
    vdir = exe.parent.parent
    (vdir / ".plain-k1ll3d" / "obj").mkdir(parents=True)      # what a killed build leaves
    (vdir / ".names.json.4242").write_text("{")
    vl.build_harness(CONFIG, "vcd")
    assert sorted(p.name for p in vdir.iterdir()) == sorted([exe.parent.name, f"{vl.TOP_NAME}.v", "names.json",
                                                             vl.build_harness(CONFIG, "vcd").parent.name])


def test_verilator_cache_refuses_sources_changed_after_import(fake_builds, monkeypatch):
    """The cache key hashes the RTL sources on disk, the export uses the modules this process imported:
    a source changed after the import (here: an import time before every file's) stops the build with
    an error naming the file, instead of filing stale Verilog under the new sources' key."""
    import opennpu
    monkeypatch.setattr(opennpu, "IMPORT_TIME", 0.0)
    with pytest.raises(RuntimeError, match=r"\.py changed after this process imported it"):
        vl.build_harness(CONFIG)
    assert fake_builds == {"export": 0, "build": 0}
