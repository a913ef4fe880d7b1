"""`shopsense coldstart`: unlabelled reviews in, a registered model out, through the pipeline's
step functions, with the real LLM server (SmolLM2: fast, weak) and a tiny training run."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture()
def reviews_file(data_dir, tmp_path):
    from shopsense.data.loaders import load_set

    rows = load_set("blitzer-dvd", data_dir)
    picked = rows[:8] + rows[-8:]
    path = tmp_path / "dvd.jsonl"
    lines = [{"text": r.text, "title": r.title, "product": r.product.name} for r in picked]
    lines[0]["rating"] = 5  # a rating is a label the loop can read
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path, picked


def test_coldstart_end_to_end(smol_llm_env, registered_model, reviews_file, tmp_path):
    from pipelines.coldstart import run_coldstart

    path, picked = reviews_file
    out = run_coldstart(
        "dvd", path, budget_minutes=3, base_sets=["uci-amazon"], base_per_set=24,
        eval_sets=["uci-imdb"], eval_per_set=30, synthetic_per_label=2, num_workers=1,
        min_confidence=0.5, work_dir=tmp_path / "work",
        overrides={"epochs": 1.0, "max_length": 32, "batch_size": 16, "image_pool": 6})
    assert out["model"].startswith("models:/shopsense-sentiment/")
    c = out["counts"]
    assert c["input"] == 16 and c["from_rating"] == 1 and c["imported"] == 24
    assert c["synthetic_generated"] >= 1 and 0 <= c["synthetic_kept"] <= c["synthetic_generated"]
    assert c["training"] >= 24 + 1
    assert out["labeller"]["teacher"] and 0 <= out["labeller"]["coverage"] <= 1
    assert set(out["discriminator_auc"]) == {"before", "after"}
    assert out["minutes"] > 0 and out["eval"]["n"] == 30
    # the registered version carries the category, and evaluate accepts its URI
    from mlflow import MlflowClient

    from shopsense.settings import get_settings

    name, version = out["model"].removeprefix("models:/").split("/")
    mv = MlflowClient(get_settings().tracking_uri()).get_model_version(name, version)
    assert mv.tags["category"] == "dvd" and mv.tags["coldstart"] == "true"
    # the teacher's labels of the input reached training as distillation targets
    assert c["teacher"]["teacher_labelled"] + c["teacher"]["teacher_only_rows"] >= 1, c["teacher"]


def test_coldstart_cli_bad_input_is_one_line(home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    env = {**os.environ, "SHOPSENSE_HOME": str(home)}
    p = subprocess.run([sys.executable, "-c", "from shopsense.cli import main; main()",
                        "coldstart", "--category", "x", "--reviews", str(bad), "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"error: {bad}:2: needs a non-empty text"
