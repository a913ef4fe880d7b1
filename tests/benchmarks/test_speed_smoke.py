"""Smoke test of benchmarks/speed.py at tiny sizes, so the script cannot rot.

No assertion on any timing: only that every part runs and reports the figures it promises.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("shopsense_bench_speed", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _console():
    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=160), buf


def test_inprocess_part(speed, tiny_train_result):
    from shopsense.model.classifier import Predictor

    predictor = Predictor.from_bundle(tiny_train_result.bundle_dir)
    rows = speed.bench_inprocess(predictor, batch_sizes=(1, 2), modes=("text", "text+image"),
                                 repeats=2, items=2, warmup=1)
    assert [(r["mode"], r["batch"]) for r in rows] == [
        ("text", 1), ("text", 2), ("text+image", 1), ("text+image", 2)]
    for r in rows:
        assert len(r["runs"]) == 2 and r["items_per_s"] > 0 and r["speedup_vs_batch1"] > 0
    assert rows[0]["speedup_vs_batch1"] == pytest.approx(1.0)
    # The photo is the decoded 256x256 rendering the API would see.
    assert speed.sample_photo().size == (256, 256)


def test_targets_and_report_from_figures(speed):
    inproc = [{"mode": "text", "batch": 32, "items_per_s": 100.0, "ms_per_call": 320.0,
               "speedup_vs_batch1": 3.0, "runs": [{}]}]
    level = {"concurrency": 32, "rps": 70.0, "p50_ms": 12.0, "p99_ms": 40.0, "errors": 0,
             "requests": 700, "loadgen_cpu_pct": 10.0, "runs": []}
    c1 = {**level, "concurrency": 1, "rps": 50.0, "p50_ms": 35.0}
    mem = {"idle_total_bytes": 2 * speed.GIB, "peak_total_bytes": int(2.2 * speed.GIB),
           "peak_processes": 12, "largest_bytes": speed.GIB, "largest_process": "replica",
           "largest_process_omp_num_threads": "1", "peak_breakdown_bytes": {"replica": 1},
           "samples": 3}
    http = [{"batching": True, "startup_s": 20.0, "levels": [c1, level], "memory": mem}]
    targets = speed.compute_targets(inproc, http)
    assert [t["met"] for t in targets] == [False, False, True]
    assert targets[0]["value"] == pytest.approx(0.7)
    assert "0.10" in targets[0]["missed_by"] and "5.0 ms" in targets[1]["missed_by"]
    assert speed.compute_targets([], [])[0]["met"] is None

    machine = {"date": "today", "host": "h", "cpu_model": "cpu", "logical_cores": 2,
               "physical_cores": 2, "usable_cores": 2, "torch": "x", "torch_threads": 2,
               "memory_gib": 8, "loadavg_1m_start": 0.0}
    result = {"machine": machine, "inprocess": inproc, "http": http, "targets": targets,
              "model": {"uri": "u", "version": "1", "max_length": 32},
              "config": {"repeats": 5, "http_repeats": 5, "seconds": 10.0, "load": "httpx"}}
    console, buf = _console()
    speed.print_report(result, console)
    out = buf.getvalue()
    assert "Targets" in out and "missed by" in out and "batching ON" in out


def test_no_model_fails_with_one_clear_line(speed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHOPSENSE_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("SHOPSENSE_MLFLOW_TRACKING_URI", raising=False)
    assert speed.main(["--skip-http"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: no model to benchmark")
    assert speed.main(["--model", str(tmp_path / "nowhere"), "--skip-http"]) == 2
    assert "neither a models:/ URI nor a model bundle" in capsys.readouterr().err


@pytest.mark.slow
def test_whole_script_with_http_at_tiny_sizes(speed, tiny_train_result, tmp_path, monkeypatch):
    """In-process and HTTP (real `shopsense serve --background` on the Ray engine, whose
    processes the memory figures name; batching on, c=2, 1 s). The side-by-side and encoder
    sections are the next test's."""
    monkeypatch.setenv("SHOPSENSE_SERVE__ENGINE", "ray")
    out = tmp_path / "speed.json"
    args = speed.parse_args([
        "--model", str(tiny_train_result.bundle_dir), "--repeats", "2", "--http-repeats", "1",
        "--items", "2", "--warmup-calls", "1", "--batch-sizes", "1,2", "--modes", "text",
        "--concurrency", "2", "--seconds", "1", "--warmup", "0.5", "--batching", "on",
        "--sample-interval", "0.2", "--side", "", "--engines", "", "--json", str(out)])
    console, buf = _console()
    result = speed.run(args, console)

    raw = json.loads(out.read_text())
    assert raw["machine"]["logical_cores"] and raw["machine"]["cpu_model"]
    assert [(r["mode"], r["batch"]) for r in raw["inprocess"]] == [("text", 1), ("text", 2)]
    (svc,) = raw["http"]
    assert svc["batching"] is True
    (level,) = svc["levels"]
    assert level["concurrency"] == 2 and level["requests"] > 0 and level["errors"] == 0
    assert len(level["runs"]) == 1 and level["p50_ms"] > 0 and level["p99_ms"] >= level["p50_ms"]
    mem = svc["memory"]
    assert mem["peak_total_bytes"] >= mem["largest_bytes"] > 0 and mem["peak_processes"] > 3
    assert "Classifier" in mem["largest_process"]
    assert [t["met"] is not None for t in result["targets"]] == [True, True, True]
    text = buf.getvalue()
    assert "Targets" in text and "In-process" in text and "HTTP POST /v1/sentiment" in text


@pytest.mark.slow
def test_peer_side_by_side_and_encoder_engines_at_tiny_sizes(speed, tiny_train_result,
                                                             tmp_path):
    """The plain peer and the local engine under the same load, every row as a ratio to the
    peer and to in-process; the onnx text engine against torch on held-out reviews."""
    out = tmp_path / "speed.json"
    args = speed.parse_args([
        "--model", str(tiny_train_result.bundle_dir), "--repeats", "1", "--http-repeats", "1",
        "--items", "2", "--warmup-calls", "1", "--batch-sizes", "1", "--modes", "text",
        "--skip-http", "--side", "peer,local", "--side-concurrency", "1", "--seconds", "1",
        "--warmup", "0.5", "--engines", "onnx", "--heldout-per-set", "10",
        "--json", str(out)])
    console, buf = _console()
    speed.run(args, console)

    raw = json.loads(out.read_text())
    assert [r["key"] for r in raw["side"]] == ["peer", "local"]
    for row in raw["side"]:
        (level,) = row["levels"]
        assert level["requests"] > 0 and level["errors"] == 0
        assert level["rps_vs_inproc"] is not None and "loadgen_cpu_pct" in level
    peer, local = raw["side"]
    assert peer["levels"][0]["rps_vs_peer"] == pytest.approx(1.0)
    assert local["levels"][0]["rps_vs_peer"] > 0
    assert peer["memory"]["peak_total_bytes"] > 0 and local["memory"]["peak_processes"] >= 1
    # the one-machine targets against the peer, for the served row only
    side = [t for t in raw["targets"] if t["target"].startswith("local:")]
    assert [t["goal"] for t in side] == [">= 1.00", "<= 1.00"]
    assert all(t["met"] is not None for t in side)
    engines = {r["engine"]: r for r in raw["engines"]["rows"]}
    assert set(engines) == {"torch", "onnx"}
    assert engines["onnx"]["agreement"] >= 0.9
