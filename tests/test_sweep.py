"""``opennpu sweep``: spec validation (line and key), the point function on the golden model (no Ray),
the results store (resume after a cut), the Pareto report, and one small sweep on a local Ray that is
cut and resumed. Slow: a kill of the whole command and a run on a ``ray start --head`` cluster."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from opennpu.cli import main
from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.model import GoldenNpu
from opennpu.sweep.expr import Filter
from opennpu.sweep.point import FIGURES, evaluate
from opennpu.sweep.report import pareto_front
from opennpu.sweep.spec import Point, SpecError, Workload, parse_spec
from opennpu.sweep.store import COLUMNS, ResultStore

MODELS = Path(__file__).resolve().parent.parent / "benchmarks" / "sweep_models"

SPEC = """\
[sweep]
name = "tiny"
filter = "not (dataflow == 'os' and array == '8x8' and kind == 'tflite')"

[axes]
array = ["4x4", "8x8"]
dataflow = ["ws", "os"]

[[workload]]
gemm = [16, 40, 24]

[[workload]]
gemm = [9, 8, 5]
act = "relu"

[[workload]]
name = "mlp"
onnx = "{models}/mlp.onnx"

[[workload]]
tflite = "kws.tflite"
"""


def _spec_file(tmp_path, text=None) -> Path:
    kws = Path(__file__).resolve().parent.parent / "models" / "mlperf_tiny" / "kws_ref_model.tflite"
    (tmp_path / "kws.tflite").write_bytes(kws.read_bytes())
    path = tmp_path / "spec.toml"
    path.write_text(text if text is not None else SPEC.format(models=MODELS))
    return path


def _error(tmp_path, text) -> str:
    path = _spec_file(tmp_path, text)
    with pytest.raises(SpecError) as info:
        parse_spec(path.read_text(), path)
    return str(info.value)


# -- spec ---------------------------------------------------------------------------------------------
def test_spec_product_and_filter(tmp_path):
    path = _spec_file(tmp_path)
    spec = parse_spec(path.read_text(), path)
    assert len(spec.workloads) == 4 and spec.filtered_out == 1
    assert len(spec.points) == 4 * 4 - 1
    assert {p.config.array for p in spec.points} == {"4x4", "8x8"}
    assert not any(p.workload.kind == "tflite" and p.config.dataflow == "os" and p.config.array == "8x8"
                   for p in spec.points)
    keys = {p.key("v1") for p in spec.points}
    assert len(keys) == len(spec.points)
    assert keys.isdisjoint(p.key("v2") for p in spec.points)       # the code version is part of the key


@pytest.mark.parametrize("edit, where", [
    (("[axes]\n", "[axes]\nrowz = [4]\n"), "spec.toml:6: axes.rowz: unknown axis"),
    (('array = ["4x4", "8x8"]', 'array = ["4x4", "8x"]'), "spec.toml:6: axes.array: array must look like RxC"),
    (('act = "relu"', 'act = "relu9"'), "spec.toml:14: workload[1].act: unknown activation"),
    (('onnx = "', 'onnx = "missing/'), "workload[2].onnx: model file"),
    (('dataflow = ["ws", "os"]', 'dataflow = ["ws", "os"]\nbus_bytes = [4]'),
     "axes: impossible configuration (array=8x8"),
    (("kind == 'tflite'", "knd == 'tflite'"), "spec.toml:3: sweep.filter: filter"),
    (("not (dataflow", "__import__('os') or (dataflow"), "is not allowed"),
    (('name = "mlp"', 'name = "gemm_16x40x24"'), "workload[2]: workload name 'gemm_16x40x24' is used twice"),
    (("[sweep]", "[sweeep]"), "spec.toml:1: sweeep: unknown table"),
    (('gemm = [16, 40, 24]', 'gemm = [16, 40]'), "workload[0].gemm: must be [M, K, N]"),
    (('array = ["4x4", "8x8"]', 'array = ["4x4", "8x8"'), "spec.toml: not valid TOML"),
    (("[axes]", "[verify]\nfraction = 2\n\n[axes]"), "spec.toml:6: verify.fraction: must be a number in (0, 1]"),
])
def test_spec_errors_name_line_and_key(tmp_path, edit, where):
    text = SPEC.format(models=MODELS).replace(*edit)
    assert where in _error(tmp_path, text)


def test_energy_tables_and_bus_axis(tmp_path):
    text = ('[axes]\nenergy = ["horowitz-isscc2014-45nm", "cheap-dram"]\nbus_bytes = ["auto", 16]\n\n'
            '[energy.cheap-dram]\ndma_byte_fj = 1000\n\n[[workload]]\ngemm = [20, 24, 12]\n')
    spec = parse_spec(text, tmp_path / "e.toml")
    assert len(spec.points) == 4
    records = {(p.config.energy.name, p.config.bus_bytes): evaluate(p) for p in spec.points}
    default, cheap = records["horowitz-isscc2014-45nm", 8], records["cheap-dram", 8]
    assert default["cycles"] == cheap["cycles"] and default["energy_mac_fj"] == cheap["energy_mac_fj"]
    assert cheap["energy_dma_fj"] == 1000 * (cheap["dma_in_bytes"] + cheap["dma_out_bytes"])
    assert cheap["energy_fj"] < default["energy_fj"]
    assert records["horowitz-isscc2014-45nm", 16]["status"] == "ok"
    with pytest.raises(SpecError, match=r"e.toml:6: energy.cheap-dram.dma_fj: unknown energy field"):
        parse_spec(text.replace("dma_byte_fj", "dma_fj"), tmp_path / "e.toml")


def test_filter_grammar():
    rule = Filter("rows * cols <= 64 and precision in ['int8', 'a8w4'] and not bus_bytes == 'auto'",
                  ("rows", "cols", "precision", "bus_bytes"))
    assert rule({"rows": 8, "cols": 8, "precision": "a8w4", "bus_bytes": 16})
    assert not rule({"rows": 8, "cols": 16, "precision": "a8w4", "bus_bytes": 16})
    assert not rule({"rows": 4, "cols": 4, "precision": "a4w4", "bus_bytes": 16})
    for bad in ("rows.real", "f(rows)", "[x for x in rows]", "rows if cols else 1", "1 < "):
        with pytest.raises(ValueError):
            Filter(bad, ("rows", "cols"))
    with pytest.raises(ValueError, match="fails on"):
        Filter("rows < 'a'", ("rows",))({"rows": 1})


# -- the point function (no Ray) ----------------------------------------------------------------------
@pytest.mark.parametrize("array, dataflow, precision", [((4, 4), "ws", "int8"), ((8, 4), "os", "int8"),
                                                        ((4, 8), "ws", "a8w4"), ((4, 4), "ws", "a4w4")])
def test_gemm_point_counters_and_figures(array, dataflow, precision):
    m, k, n = 21, 37, 19
    config = NpuConfig(rows=array[0], cols=array[1], dataflow=dataflow,
                       precisions=("int8",) if precision == "int8" else ("int8", precision))
    point = Point(Workload("g", "gemm", (m, k, n), act="relu"), config, precision)
    record = evaluate(point)
    assert record["status"] == "ok", record["error"]
    direct = GoldenNpu(config).run(build_gemm(config, random_gemm(m, k, n, precision, "relu", 0)).program).counters
    for name in ("cycles", "busy_cycles", "macs", "energy_fj", "dma_in_bytes", "dma_out_bytes"):
        assert record[name] == direct[name], name
    assert record["macs"] == m * k * n
    assert sum(record[f"energy_{p}_fj"] for p in ("mac", "act_sram", "wgt_sram", "acc_sram", "dma", "act_unit")) \
        == record["energy_fj"]
    assert 0 < record["bound_cycles"] <= record["cycles"]
    assert record["bound_fraction"] == pytest.approx(record["bound_cycles"] / record["cycles"])
    peak = config.rows * config.cols * (2 if precision == "a4w4" else 1)
    assert 0 < record["utilization"] <= 1
    assert record["utilization"] == pytest.approx(m * k * n / (record["cycles"] * peak))
    assert record["fits"] is True and record["programs"] == 1
    assert record["sram_bytes"] == (config.act_depth * config.rows + config.wgt_depth * config.cols
                                    + config.acc_depth * 4 * config.cols)
    assert set(FIGURES) <= set(record) and set(record) <= set(COLUMNS)


def test_point_that_does_not_fit_the_srams():
    config = NpuConfig(rows=4, cols=4, act_depth=64, wgt_depth=64, acc_depth=16)
    record = evaluate(Point(Workload("g", "gemm", (40, 40, 40)), config, "int8"))
    assert record["status"] == "ok", record["error"]
    assert record["fits"] is False
    assert record["dma_in_bytes"] > 40 * 40 * 2               # operands streamed in more than once


def test_model_points_unsupported_and_failed():
    pytest.importorskip("onnx")
    blob = (MODELS / "mlp.onnx").read_bytes()
    mlp = Workload("mlp", "onnx", path=str(MODELS / "mlp.onnx"))
    ok = evaluate(Point(mlp, NpuConfig(rows=4, cols=4), "int8"), blob)
    assert ok["status"] == "ok", ok["error"]
    assert ok["macs"] == 64 * 64 + 64 * 10
    os_point = evaluate(Point(mlp, NpuConfig(rows=4, cols=4, dataflow="os"), "int8"), blob)
    assert os_point["status"] == "unsupported" and "weight-stationary" in os_point["error"]
    int4 = evaluate(Point(mlp, NpuConfig(rows=4, cols=4, precisions=("int8", "a8w4")), "a8w4"), blob)
    assert int4["status"] == "unsupported" and "int8 programs only" in int4["error"]
    corrupt = evaluate(Point(Workload("kws", "tflite", path="kws.tflite"), NpuConfig(), "int8"), b"TFL3")
    assert corrupt["status"] == "failed" and "TFLiteFormatError" in corrupt["error"]


def test_tflite_point_sums_the_npu_layers():
    pytest.importorskip("tflite")
    from pathlib import Path

    from opennpu.compiler.graph_npu import run_on_npu
    from opennpu.compiler.tflite_import import import_tflite
    blob = (Path(__file__).resolve().parent.parent / "models" / "mlperf_tiny" / "kws_ref_model.tflite").read_bytes()
    config = NpuConfig(rows=16, cols=16)
    record = evaluate(Point(Workload("kws", "tflite", path="kws.tflite", batch=1), config, "int8"), blob)
    assert record["status"] == "ok", record["error"]
    graph = import_tflite(blob)
    x = np.random.default_rng(0).integers(-128, 128, (1, *graph.tensors[graph.inputs[0]].shape), dtype=np.int8)
    _, records = run_on_npu(graph, x, config)
    assert record["cycles"] == sum(r["cycles"] for r in records if r["device"] == "npu")
    assert record["energy_fj"] == sum(r["energy_fj"] for r in records if r["device"] == "npu")
    broken = evaluate(Point(Workload("bad", "gemm", (0, 4, 4)), NpuConfig(), "int8"))
    assert broken["status"] == "failed" and "ValueError" in broken["error"] and "cycles" not in broken


def test_onnx_graph_point_runs_node_by_node():
    """An ONNX model that is not a chain (a residual net) is a point like a TFLite model, not unsupported."""
    pytest.importorskip("torch")
    from opennpu.compiler.onnx_archs import build
    from opennpu.compiler.onnx_import import import_onnx_graph
    blob, _ = build("resnet", False, samples=4)
    config = NpuConfig(rows=8, cols=8)
    record = evaluate(Point(Workload("resnet", "onnx", path="resnet.onnx", batch=2), config, "int8"), blob)
    assert record["status"] == "ok", record["error"]
    graph = import_onnx_graph(blob).graph
    x = np.random.default_rng(0).integers(-128, 128, (2, *graph.tensors[graph.inputs[0]].shape), dtype=np.int8)
    from opennpu.compiler.graph_npu import run_on_npu
    _, records = run_on_npu(graph, x, config)
    assert record["cycles"] == sum(r["cycles"] for r in records if r["device"] == "npu")


# -- store and report ---------------------------------------------------------------------------------
def test_store_cuts_a_partial_row_and_refuses_other_columns(tmp_path):
    store = ResultStore(tmp_path / "out")
    store.check()
    store.open()
    store.append({"key": "a", "status": "ok", "cycles": 10, "fits": True, "utilization": 0.5})
    with store.csv.open("a") as f:
        f.write("b,v,ok,,w")                                  # what a kill mid-write leaves
    assert [r["key"] for r in store.rows()] == ["a"]
    store.open()
    store.append({"key": "c", "status": "failed", "error": "boom, with a comma"})
    rows = store.rows()
    assert [r["key"] for r in rows] == ["a", "c"] and rows[0]["cycles"] == 10 and rows[0]["fits"] is True
    assert rows[1]["error"] == "boom, with a comma" and rows[1]["cycles"] is None
    with pytest.raises(ValueError, match="unknown columns"):
        store.append({"key": "d", "colour": 1})
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.csv").write_text("key,status\n")
    with pytest.raises(ValueError, match="other columns"):
        ResultStore(other).check()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        ResultStore(tmp_path / "file").check()


def test_verify_selection_caps_the_configurations():
    from opennpu.sweep.verify import select
    configs = [NpuConfig(rows=r, cols=4) for r in (2, 4, 8)]
    pairs = [(f"{i:02d}", Point(Workload("g", "gemm", (4, 4, 4)), configs[i % 3], "int8")) for i in range(30)]
    chosen = select(pairs, 0.5, 2)
    assert len(chosen) == 15 and len({p.config for _, p in chosen}) == 2
    assert select(pairs, 0.05, 2) == [pairs[0], pairs[1]]
    assert len(select(pairs[:3], 1.0, 1)) == 1                 # the cap leaves fewer than asked


def test_pareto_front():
    rows = [{"cycles": c, "energy_fj": e, "id": i} for i, (c, e) in
            enumerate([(10, 50), (20, 40), (15, 60), (30, 10), (30, 5), (40, 5), (10, 50)])]
    assert [r["id"] for r in pareto_front(rows)] == [0, 1, 4]


# -- a sweep on a local Ray ---------------------------------------------------------------------------
def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_local_ray_sweep_records_resumes_and_reports(tmp_path, capsys):
    pytest.importorskip("ray")
    pytest.importorskip("onnx")
    from opennpu.sweep.runner import run_sweep
    path = _spec_file(tmp_path)
    spec = parse_spec(path.read_text(), path)
    bad = Point(Workload("bad", "gemm", (0, 4, 4)), NpuConfig(), "int8")     # raises inside its task
    spec.points.append(bad)
    out = tmp_path / "out"
    first = run_sweep(spec, out, workers=2, progress=False)
    assert (first["ran"], first["skipped"]) == (16, 0)
    # gemm x 4 configs ok, mlp and DS-CNN ok on ws (2 + 2), unsupported on os (2 + 1), bad failed
    assert (first["ok"], first["unsupported"], first["failed"]) == (12, 3, 1)
    store = ResultStore(out)
    rows = {r["key"]: r for r in store.rows()}
    assert len(rows) == 16
    assert rows[bad.key(first["code_version"])]["error"].startswith("ValueError")

    code, text, err = _cli(capsys, "sweep", str(path), "--out", str(out), "--json")
    again = json.loads(text)
    assert code == 1 and err == ""                          # exit 1: a recorded point failed
    assert (again["ran"], again["skipped"]) == (0, 15)

    report = again["report"]
    summary = (out / "summary.md").read_text()
    for name in ("gemm_16x40x24", "gemm_9x8x5", "mlp"):
        assert (out / f"pareto_{name}.png").stat().st_size > 1000 and f"## {name}" in summary
        front = report["workloads"][name]["front"]
        assert front and all(k in rows for k in front)
    assert report["workloads"]["kws"]["front"] and "weight-stationary" in summary
    (out / "summary.md").unlink()
    code, text, _ = _cli(capsys, "sweep", "--report", str(out), "--json")
    assert code == 0 and json.loads(text)["workloads"]["mlp"]["front"] == report["workloads"]["mlp"]["front"]
    assert (out / "summary.md").read_text() == summary


# -- CLI errors ---------------------------------------------------------------------------------------
def test_cli_errors_are_one_line(tmp_path, capsys):
    path = _spec_file(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "b").mkdir()
    bad = _spec_file(tmp_path / "b", SPEC.format(models=MODELS).replace("[axes]", "[axes]\nfoo = 1"))
    for argv, message in ((["sweep"], "give either SPEC.toml or --report DIR"),
                          (["sweep", str(tmp_path / "nope.toml")], "not found"),
                          (["sweep", str(bad)], "axes.foo: unknown axis"),
                          (["sweep", str(path), "--out", str(tmp_path / "afile")], "is a file"),
                          (["sweep", "--report", str(tmp_path)], "holds no sweep results"),
                          (["sweep", str(path), "--workers", "0"], "--workers must be >= 1")):
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, (argv, err)


# -- slow: a real kill, a real cluster ----------------------------------------------------------------
KILL_SPEC = """\
[axes]
array = ["4x4", "8x8"]
dataflow = ["os"]
act_depth = [1024, 2048, 4096]

[[workload]]
gemm = [160, 192, 160]

[[workload]]
gemm = [96, 256, 128]
"""


@pytest.mark.slow
def test_kill_loses_only_the_points_in_flight(tmp_path, capsys):
    pytest.importorskip("ray")
    spec = tmp_path / "kill.toml"
    spec.write_text(KILL_SPEC)
    out = tmp_path / "out"
    store = ResultStore(out)
    proc = subprocess.Popen([sys.executable, "-m", "opennpu.cli", "sweep", str(spec), "--out", str(out), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while len(store.rows()) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)           # the command and the Ray it started
        proc.wait()
    before = store.rows()
    assert 2 <= len(before) < 12
    code, text, _ = _cli(capsys, "sweep", str(spec), "--out", str(out), "--json")
    resumed = json.loads(text)
    assert code == 0 and resumed["skipped"] == len(before) and resumed["ran"] == 12 - len(before)
    after = store.rows()
    assert len(after) == len({r["key"] for r in after}) == 12 and after[:len(before)] == before


@pytest.mark.slow
def test_sweep_on_a_ray_start_head_cluster(tmp_path, capsys):
    pytest.importorskip("ray")
    from opennpu.sweep.cluster import head_node
    from opennpu.sweep.runner import ray_session
    with head_node(num_cpus=2) as address:
        path = _spec_file(tmp_path)
        code, text, _ = _cli(capsys, "sweep", str(path), "--out", str(tmp_path / "out"), "--address", address,
                             "--json")
        run = json.loads(text)
        assert code == 0 and run["address"] == address and run["ran"] == 15
        # gemm x 4 configs ok, mlp and DS-CNN ok on ws (2 + 2), unsupported on os (2 + 1)
        assert (run["ok"], run["unsupported"], run["failed"]) == (12, 3, 0)
        with ray_session(address) as ray:               # the workers run the shipped copy, not this tree
            where = ray.get(ray.remote(lambda: __import__("opennpu").__file__).remote())
        assert "runtime_resources" in where and not where.startswith(str(Path(__file__).parent.parent))


@pytest.mark.slow
def test_verilator_spot_checks_equal_the_golden_counters(tmp_path, capsys):
    pytest.importorskip("ray")
    from opennpu.sim.verilator import find_tools
    try:
        find_tools()
    except Exception as error:                                 # noqa: BLE001 - no Verilator here
        pytest.skip(f"no Verilator: {error}")
    spec = tmp_path / "verify.toml"
    spec.write_text('[axes]\narray = ["2x2", "4x4"]\ndataflow = ["ws", "os"]\n\n'
                    '[[workload]]\ngemm = [7, 9, 5]\n\n[[workload]]\ngemm = [12, 8, 6]\nact = "relu"\n\n'
                    '[verify]\nfraction = 0.5\nmax_configs = 2\n')
    code, text, _ = _cli(capsys, "sweep", str(spec), "--out", str(tmp_path / "out"), "--json")
    run = json.loads(text)
    assert code == 0 and run["ok"] == 8
    assert run["checks"] == {"ran": 4, "equal": 4, "differ": 0, "failed": 0}
    assert run["report"]["checks"]["configs"] <= 2 and run["report"]["checks"]["points"] == 4
    assert "## Verilator spot-checks" in (tmp_path / "out" / "summary.md").read_text()
    code, text, _ = _cli(capsys, "sweep", str(spec), "--out", str(tmp_path / "out"), "--json")
    assert json.loads(text)["checks"]["ran"] == 0                          # done checks are not redone


def test_cli_refuses_an_address_where_no_cluster_listens(tmp_path, capsys):
    pytest.importorskip("ray")
    path = _spec_file(tmp_path)
    start = time.monotonic()
    code, out, err = _cli(capsys, "sweep", str(path), "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1")
    assert code == 2 and out == "" and err.count("\n") == 1 and "no Ray cluster at '127.0.0.1:1'" in err
    assert time.monotonic() - start < 10 and not (tmp_path / "out").exists()
