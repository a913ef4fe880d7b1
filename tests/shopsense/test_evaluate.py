import json
import subprocess
import sys

import numpy as np
import pytest

from shopsense.baselines import keyword_counts, keyword_proba, vader_proba
from shopsense.errors import DataError
from shopsense.evaluate import choose, evaluate_records, read_eval_file


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-c", "from shopsense.cli import main; main()", *args],
        capture_output=True, text=True, env=env, timeout=600,
    )


def test_keyword_rule_counts_its_twenty_words():
    assert keyword_counts("Excellent! The BEST, I love it") == (3, 0)
    assert keyword_counts("bad, worst, broken. great") == (1, 3)
    labels = ["negative", "neutral", "positive"]
    rows = keyword_proba(["great great bad", "bad poor", "it is a phone", "great bad"])
    assert [labels[i] for i in rows.argmax(axis=1)] == ["positive", "negative", "neutral", "neutral"]


def test_vader_thresholds():
    rows = vader_proba(["I love this, it is wonderful", "This is horrible and broken", "It is a box."])
    assert list(rows.argmax(axis=1)) == [2, 0, 1]


def test_two_label_files_choose_between_those_two():
    proba = np.array([[0.2, 0.7, 0.1], [0.1, 0.5, 0.4]])
    assert choose(proba, ["negative", "positive"]) == ["negative", "positive"]
    assert choose(proba, ["negative", "neutral", "positive"]) == ["neutral", "neutral"]


def test_evaluate_records_contract_fields():
    recs = [{"text": "a", "label": "positive", "category": "x"},
            {"text": "b", "label": "negative", "category": "y"},
            {"text": "c", "label": "positive", "category": "y"}]
    out = evaluate_records(recs, lambda t, i: np.array([[0, 0.9, 0.1], [0.6, 0.3, 0.1],
                                                        [0.5, 0.1, 0.4]]), model={"name": "m"})
    for key in ("n", "accuracy", "macro_f1", "per_class", "confusion", "model"):
        assert key in out
    assert out["n"] == 3 and out["labels"] == ["negative", "positive"]
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["confusion"]["matrix"] == [[1, 0], [1, 1]]
    assert set(out["per_category"]) == {"x", "y"}


def test_read_eval_file_errors_name_the_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok", "label": "positive"}\n{"text": "x", "label": "meh"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: label must be one of"):
        read_eval_file(f)
    f.write_text('{"text": "ok", "label": "positive"}\nnot json\n')
    with pytest.raises(DataError, match=r":2: not valid JSON"):
        read_eval_file(f)
    with pytest.raises(DataError, match="no such file"):
        read_eval_file(tmp_path / "missing.jsonl")


@pytest.fixture()
def eval_file(tmp_path):
    f = tmp_path / "eval.jsonl"
    rows = [("This is the best phone, I love it", "positive"),
            ("Terrible battery, a waste of money", "negative"),
            ("Works great, excellent sound", "positive"),
            ("Broken on arrival, awful", "negative"),
            ("It is a phone", "positive")]
    f.write_text("".join(json.dumps({"text": t, "label": lbl, "category": "phones"}) + "\n"
                         for t, lbl in rows))
    return f


@pytest.mark.parametrize("baseline", ["keyword", "vader"])
def test_cli_evaluate_baselines_print_one_json_object(eval_file, baseline):
    p = run_cli("evaluate", "--data", str(eval_file), "--baseline", baseline, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["n"] == 5 and out["model"]["name"] == f"baseline:{baseline}"
    assert {"accuracy", "macro_f1", "per_class", "confusion"} <= set(out)
    if baseline == "keyword":
        assert out["accuracy"] == pytest.approx(0.8)  # "It is a phone" ties -> negative


def test_cli_user_mistakes_exit_nonzero_with_one_line(tmp_path, eval_file):
    p = run_cli("evaluate", "--data", str(tmp_path / "nope.jsonl"), "--baseline", "keyword")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "no such file" in p.stderr
    p = run_cli("evaluate", "--data", str(eval_file), "--baseline", "coin")
    assert p.returncode == 2 and "unknown baseline" in p.stderr and "Traceback" not in p.stderr


def test_cli_evaluate_a_registered_model(registered_model, eval_file, home):
    import os

    env = {**os.environ, "SHOPSENSE_HOME": str(home)}
    p = run_cli("evaluate", "--data", str(eval_file), "--json", env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["model"]["name"] == "shopsense-sentiment"
    assert out["model"]["version"] == registered_model["version"] and out["n"] == 5
    p = run_cli("evaluate", "--data", str(eval_file), "--model", "models:/nope@champion",
                env=env)
    assert p.returncode == 2 and "not in the registry" in p.stderr
