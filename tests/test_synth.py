"""FPGA flow (``synth/``): the board designs elaborate into build plans (fast); real YoWASP builds
with parsed reports are ``slow``."""
import json
import shutil
import sys
from pathlib import Path

import pytest

from opennpu.cli import main
from opennpu.synth.boards import BOARDS, get_board
from opennpu.synth.flow import BuildFailed, ToolMissing, plan, synth_config, synthesize
from opennpu.synth.report import parse_nextpnr_log, parse_nextpnr_report, parse_yosys_stat


@pytest.mark.parametrize("board, array, synth_cmd, dataflow", [("ulx3s-85f", (2, 2), "synth_ecp5", "ws"),
                                                               ("ulx3s-85f", (2, 2), "synth_ecp5", "os"),
                                                               ("icebreaker", (2, 2), "synth_ice40 -dsp", "ws")])
def test_board_design_elaborates_to_a_build_plan(board, array, synth_cmd, dataflow):
    config = synth_config(board, *array, dataflow=dataflow)
    build = plan(board, config)
    files = build.files
    assert {"opennpu.il", "opennpu.ys", "build_opennpu.sh"} <= set(files)
    assert synth_cmd in files["opennpu.ys"]
    script = files["build_opennpu.sh"]
    assert "--report opennpu.report.json" in script
    il = files["opennpu.il"]
    assert ("EHXPLLL" if BOARDS[board].family == "ecp5" else "SB_PLL40_PAD") in il
    # The SRAMs are plain 1-write 1-read memories (block RAM), never multi-port ones.
    assert "module \\opennpu.npu.npu.core.act_sram" in il and "\\bank1_copy1" in il and "\\copy2" in il


def test_board_defaults_and_errors():
    assert synth_config("icebreaker", 4, 4).act_depth == 512
    assert synth_config("ulx3s-85f", 8, 8, act_depth=1024).act_depth == 1024
    with pytest.raises(ValueError, match="unknown board 'de10'"):
        get_board("de10")
    with pytest.raises(ValueError, match="too big for icebreaker"):
        synth_config("icebreaker", 8, 8)


def test_cli_errors_are_one_line(capsys, monkeypatch):
    assert main(["synth", "--board", "nope", "--array", "2x2"]) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err
    assert main(["synth", "--board", "icebreaker", "--array", "16x16"]) == 2
    assert "too big" in capsys.readouterr().err
    monkeypatch.setenv("YOSYS", "no-such-yosys")
    assert main(["synth", "--board", "icebreaker", "--array", "2x2"]) == 2
    err = capsys.readouterr().err
    assert "no-such-yosys" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ToolMissing):
        synthesize("icebreaker", synth_config("icebreaker", 2, 2))


REPORT = {"utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640},
                          "MULT18X18D": {"used": 4, "available": 156}},
          "fmax": {"clk": {"achieved": 131.2, "constraint": 125.0}}}
LOG = """Info: Device utilisation:
Info: 	          MULT18X18D:     166/    156   106%
Info: 	        TRELLIS_COMB:   61618/  83640    73%
Info: Max frequency for clock 'clk': 74.32 MHz (FAIL at 125.00 MHz)
"""
STAT = """2.51. Printing statistics.

=== opennpu ===
       30   DP16KD
     4255   CCU2C
    51572   LUT4
    21647   TRELLIS_FF
"""


def test_report_parsers():
    r = parse_nextpnr_report(json.dumps(REPORT))
    assert r["utilization"]["MULT18X18D"] == (4, 156) and r["fmax"]["clk"] == (131.2, 125.0)
    g = parse_nextpnr_log(LOG)
    assert g["utilization"]["MULT18X18D"] == (166, 156) and g["fmax"]["clk"] == (74.32, 125.0)
    cells = parse_yosys_stat(STAT)
    assert (cells["LUT4"], cells["TRELLIS_FF"], cells["DP16KD"]) == (51572, 21647, 30)


def _tools(board):
    return all(shutil.which(cmd) or (Path(sys.executable).parent / cmd).exists() for _, cmd in BOARDS[board].tools)


@pytest.mark.slow
def test_real_ecp5_build_fits_and_reports(tmp_path):
    if not _tools("ulx3s-85f"):
        pytest.skip("YoWASP tools not installed (pip install opennpu[fpga])")
    # 2x2 with small SRAMs routes in a few minutes (larger arrays do not converge yet: synth/RESULTS.md).
    config = synth_config("ulx3s-85f", 2, 2, act_depth=512, wgt_depth=256, acc_depth=128)
    result = synthesize("ulx3s-85f", config, build_dir=tmp_path)
    assert result.fits
    assert result.luts > 0 and result.ffs > 0 and result.dsps > 0 and result.brams > 0
    assert result.fmax_mhz and result.fmax_mhz > 0 and result.target_mhz == 125.0
    assert Path(result.bitstream).stat().st_size > 0


@pytest.mark.slow
def test_real_ice40_build_reports_what_does_not_fit(tmp_path):
    """The iCE40UP5K is too small for this NPU (synth/RESULTS.md): the flow says which resources
    are over-used instead of failing obscurely."""
    if not _tools("icebreaker"):
        pytest.skip("YoWASP tools not installed (pip install opennpu[fpga])")
    with pytest.raises(BuildFailed, match=r"does not fit icebreaker .*ICESTORM_LC \d+/5280"):
        synthesize("icebreaker", synth_config("icebreaker", 2, 2), build_dir=tmp_path)


@pytest.mark.parametrize("block", ["array", "activation", "npu"])
def test_block_harness_elaborates(block):
    """Each out-of-context block (synth/blocks.py) converts to RTLIL inside its 64-bit harness."""
    from amaranth.back import rtlil
    from opennpu.config import NpuConfig
    from opennpu.synth.blocks import _block, harness
    il = rtlil.convert(harness(_block(block, NpuConfig(rows=2, cols=2, act_depth=64, wgt_depth=64,
                                                       acc_depth=64))), name="top")
    assert "module \\top" in il and "wire width 64 input 0 \\i" in il.replace("  ", " ")
    with pytest.raises(ValueError, match="unknown block 'pe'"):
        _block("pe", NpuConfig(rows=2, cols=2))


@pytest.mark.slow
def test_real_block_build_reports_fmax(tmp_path):
    if not _tools("ulx3s-85f"):
        pytest.skip("YoWASP tools not installed (pip install opennpu[fpga])")
    from opennpu.config import NpuConfig
    from opennpu.synth.blocks import block_fmax
    result = block_fmax("activation", NpuConfig(rows=2, cols=2), build_dir=tmp_path)
    assert result.fmax_mhz > 0 and result.luts > 0 and result.ffs > 0 and result.dsps > 0
