"""The ``opennpu`` CLI: JSON reports, verification, one-line errors with exit code 2."""
import json

import numpy as np
import pytest

from opennpu.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_gemm_golden_json(capsys):
    code, out, _ = run(capsys, "gemm", "--m", "100", "--k", "70", "--n", "33", "--array", "8x8",
                       "--backend", "golden", "--json")
    report = json.loads(out)
    assert code == 0 and report["verified"] is True
    for key in ("backend", "array", "shape", "cycles", "busy_cycles", "macs", "utilization", "energy_pj",
                "counters", "wall_s"):
        assert key in report
    assert report["macs"] == 100 * 70 * 33
    assert report["utilization"] == pytest.approx(report["macs"] / (report["cycles"] * 64))


def test_gemm_pysim_small(capsys):
    code, out, _ = run(capsys, "gemm", "--m", "6", "--k", "5", "--n", "3", "--array", "2x2", "--backend",
                       "pysim", "--act", "relu", "--json")
    report = json.loads(out)
    assert code == 0 and report["verified"] and report["checks"]["golden_counters"]


def test_gemm_output_stationary_pysim(capsys):
    code, out, _ = run(capsys, "gemm", "--m", "5", "--k", "6", "--n", "3", "--array", "2x2", "--dataflow", "os",
                       "--backend", "pysim", "--json")
    report = json.loads(out)
    assert code == 0 and report["verified"] and report["dataflow"] == "os" and report["checks"]["golden_counters"]


@pytest.mark.parametrize("argv, message", [
    (["--m", "0", "--k", "2", "--n", "2"], "dimension m"),
    (["--m", "2", "--k", "2", "--n", "2", "--array", "8by8"], "RxC"),
    (["--m", "2", "--k", "2", "--n", "2", "--array", "0x4"], "rows"),
])
def test_gemm_bad_input(capsys, argv, message):
    code, out, err = run(capsys, "gemm", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_unknown_choice_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gemm", "--m", "2", "--k", "2", "--n", "2", "--act", "swish"])
    assert exit_info.value.code == 2


def test_export_verilog(tmp_path, capsys):
    path = tmp_path / "npu.v"
    code, out, _ = run(capsys, "export", "--array", "2x2", "-o", str(path), "--json")
    assert code == 0 and json.loads(out)["array"] == "2x2"
    text = path.read_text()
    assert "module opennpu_top" in text and "endmodule" in text


def test_sim_writes_vcd_and_gtkw(tmp_path, capsys):
    vcd = tmp_path / "run.vcd"
    code, _, _ = run(capsys, "sim", "--m", "3", "--k", "2", "--n", "2", "--array", "2x2", "--vcd", str(vcd))
    assert code == 0
    assert vcd.stat().st_size > 1000
    gtkw = (tmp_path / "run.gtkw").read_text()
    assert "controller" in gtkw and "array" in gtkw


# -- issue 18: one-line errors with exit 2 instead of tracebacks (defect 7) -------------------------

def one_line_error(capsys, argv, message, code=2):
    code_, out, err = run(capsys, *argv)
    assert (code_, out) == (code, ""), err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    return err


@pytest.fixture
def corrupt_model(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"this is not an ONNX model\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 8), np.float32))
    return str(tmp_path / "bad.onnx"), str(tmp_path / "x.npy")


def test_export_to_a_missing_folder_or_a_folder(tmp_path, capsys):
    one_line_error(capsys, ["export", "--array", "2x2", "-o", str(tmp_path / "missing" / "npu.v")],
                   "does not exist")
    one_line_error(capsys, ["export", "--array", "2x2", "-o", str(tmp_path)], "is a directory")


def test_sim_vcd_in_a_missing_folder_is_refused_before_simulating(tmp_path, capsys, monkeypatch):
    import opennpu.cli_gemm
    monkeypatch.setattr(opennpu.cli_gemm, "run_gemm", lambda *a, **k: pytest.fail("simulated anyway"))
    one_line_error(capsys, ["sim", "--m", "2", "--k", "2", "--n", "2", "--array", "2x2", "--vcd",
                            str(tmp_path / "missing" / "out.vcd")], "--vcd")


def test_report_missing_model_and_output_that_is_a_file(tmp_path, capsys):
    one_line_error(capsys, ["report", str(tmp_path / "missing.onnx")], "not found")
    (tmp_path / "afile").write_text("")
    one_line_error(capsys, ["report", "--gemm", "4x4x4", "-o", str(tmp_path / "afile")], "is a file")


def test_run_corrupt_model(corrupt_model, capsys):
    pytest.importorskip("onnx")
    model, x = corrupt_model
    one_line_error(capsys, ["run", model, "--input", x], "not an ONNX model")


def test_run_output_path_is_checked_before_running(corrupt_model, tmp_path, capsys):
    """The corrupt model would fail later: the --output error proves the path is checked first."""
    model, x = corrupt_model
    one_line_error(capsys, ["run", model, "--input", x, "--output", str(tmp_path / "missing" / "y.npy")],
                   "does not exist")
    one_line_error(capsys, ["run", model, "--input", x, "--output", str(tmp_path / "y.txt")],
                   "must end in .npy")                                        # defect 8: no y.txt.npy
    assert not list(tmp_path.glob("y.txt*"))


@pytest.mark.parametrize("argv, message", [
    (["--baud", "0"], "baud rate must be a positive integer, got 0"),
    (["--baud", "-9600"], "baud rate must be a positive integer"),
    (["--freq", "-5"], "core clock must be > 0 MHz, got -5.0"),
    (["--freq", "0"], "core clock must be > 0 MHz, got 0.0"),
])
def test_synth_bad_clocks(tmp_path, capsys, argv, message):
    one_line_error(capsys, ["synth", "--board", "ulx3s-85f", "--plan-only", "--build-dir", str(tmp_path / "b"),
                            *argv], message)
    assert not (tmp_path / "b").exists()


# -- silently wrong results (defect 8) --------------------------------------------------------------

@pytest.mark.parametrize("mhz", ["-5", "0", "nan"])
def test_report_fpga_mhz_must_be_positive(tmp_path, capsys, mhz):
    one_line_error(capsys, ["report", "--gemm", "4x4x4", "--fpga-mhz", mhz, "-o", str(tmp_path / "r")],
                   "fpga_mhz must be > 0")
    assert not (tmp_path / "r").exists()


def test_backpressure_on_golden_is_an_error(capsys):
    one_line_error(capsys, ["gemm", "--m", "2", "--k", "2", "--n", "2", "--backpressure", "3"], "back-pressure")


def test_huge_gemm_is_refused_with_an_estimate(capsys):
    err = one_line_error(capsys, ["gemm", "--m", "10000000", "--k", "2", "--n", "2"], "GB of host memory")
    assert "--max-gb 4" in err


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gemm", "--m", "x", "--k", "2", "--n", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["opennpu gemm: error: argument --m: invalid int value: 'x'"]


# -- Ctrl-C (defect 10) -----------------------------------------------------------------------------

def test_ctrl_c_exits_130_in_one_line(capsys, monkeypatch):
    import opennpu.cli_gemm

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(opennpu.cli_gemm, "run_gemm", interrupted)
    assert one_line_error(capsys, ["gemm", "--m", "2", "--k", "2", "--n", "2"], "interrupted", code=130) \
        == "opennpu gemm: interrupted\n"


def test_ctrl_c_during_sim_removes_the_partial_waveform(tmp_path, capsys, monkeypatch):
    from opennpu.sim import pysim

    def interrupted(self):                # Ctrl-C after a few simulated steps, the VCD half written
        for _ in range(40):
            self.advance()
        raise KeyboardInterrupt
    monkeypatch.setattr(pysim.Simulator, "run", interrupted)
    vcd = tmp_path / "run.vcd"
    err = one_line_error(capsys, ["sim", "--m", "2", "--k", "2", "--n", "2", "--array", "2x2", "--vcd", str(vcd)],
                         "interrupted; removed the partial waveform files", code=130)
    assert str(vcd) in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("json_flag", [False, True])
def test_progress_on_a_terminal_never_under_json(capsys, monkeypatch, json_flag):
    pytest.importorskip("rich")
    import sys
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, out, err = run(capsys, "gemm", "--m", "4", "--k", "3", "--n", "2", *(["--json"] if json_flag else []))
    assert code == 0
    if json_flag:
        assert err == "" and json.loads(out)["verified"]
    else:
        assert "GEMM 4x3x2 on golden" in err


def test_gemm_checks_numpy_by_default_and_torch_on_request(capsys):
    """Without ``--torch`` the result is checked against the numpy numerics and torch is never imported
    (its import alone takes seconds); ``--torch`` adds the PyTorch reference check."""
    import subprocess
    import sys
    code = ("import sys, json, io, contextlib\nfrom opennpu.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    assert main(['gemm', '--m', '8', '--k', '8', '--n', '8', '--json']) == 0\n"
            "report = json.loads(out.getvalue())\n"
            "assert report['checks']['numerics'] and 'torch_reference' not in report['checks'], report\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    pytest.importorskip("torch")
    code, out, _ = run(capsys, "gemm", "--m", "8", "--k", "8", "--n", "8", "--torch", "--json")
    report = json.loads(out)
    assert code == 0 and report["checks"]["torch_reference"] is True and report["compile_s"] >= 0


def test_a_failed_backend_is_one_line_and_exit_2(monkeypatch, capsys):
    """A backend that fails (a Verilator build, a dead harness, RTL sources changed under the process:
    ``BackendFailed``, with the log in its message) ends the CLI with one line, its first and last, and
    exit 2; no traceback."""
    from opennpu.sim import driver

    def fail(self, program):
        raise driver.BackendFailed("Verilator build failed (exit 2) after 3 s:\n%Error: one\n%Error: the last")
    monkeypatch.setattr(driver.Npu, "run", fail)
    assert main(["gemm", "--m", "2", "--k", "2", "--n", "2", "--backend", "pysim"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "Verilator build failed (exit 2)" in err and err.rstrip().endswith("%Error: the last")
