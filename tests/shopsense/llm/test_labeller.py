"""The zero-shot labeller against the real llama.cpp server, and its teacher-label cache."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shopsense.errors import LLMUnavailable
from shopsense.llm.client import LLMClient
from shopsense.llm.labeller import TeacherLabels, ZeroShotLabeller, clip_review, label_distribution
from shopsense.llm.server import LLMEndpoint
from shopsense.store import LocalStore


def test_label_distribution_sums_label_word_tokens():
    p, mass = label_distribution({"Positive": np.log(0.5), " positive": np.log(0.1),
                                  "neg": np.log(0.2), "The": np.log(0.15)})
    assert p.sum() == pytest.approx(1.0)
    # neutral is missing: it gets the lowest listed log-probability (0.1), an upper bound
    assert p == pytest.approx(np.array([0.2, 0.1, 0.6]) / 0.9)
    assert mass == pytest.approx(0.8)


def test_clip_keeps_head_and_tail():
    text = " ".join(f"w{i}" for i in range(400))
    out = clip_review(text, 200)
    assert len(out) <= 200 and out.startswith("w0 w1") and out.endswith("w399")
    assert clip_review("short  text ", 200) == "short text"


def test_real_server_gives_a_distribution(smol_llm):
    with LLMClient(smol_llm) as client:
        top = client.first_token_logprobs(ZeroShotLabeller(client).messages("Awful. Broke."))
        assert len(top) >= 5 and all(v <= 0 for v in top.values())
        p = ZeroShotLabeller(client).proba(["Awful. Broke.", "", "Love it"])
    assert p.shape == (3, 3) and np.allclose(p.sum(axis=1), 1)
    assert np.allclose(p[1], 1 / 3)  # no text: no opinion


class Counting:
    """A client wrapper that counts calls and can fail after ``fail_after`` of them."""

    def __init__(self, client, fail_after=None):
        self.client, self.calls, self.fail_after = client, 0, fail_after
        self.endpoint = client.endpoint

    def first_token_logprobs(self, messages, **kw):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise LLMUnavailable("killed")
        self.calls += 1
        return self.client.first_token_logprobs(messages, **kw)


def test_cache_resumes_after_a_failure_and_labels_each_text_once(smol_llm, tmp_path):
    store = LocalStore(tmp_path)
    texts = [f"Review number {i}: it {'works' if i % 2 else 'broke'}." for i in range(10)]
    with LLMClient(smol_llm) as client:
        dying = Counting(client, fail_after=7)
        cache = TeacherLabels(store, smol_llm.identity, shard_size=3)
        with pytest.raises(LLMUnavailable):
            ZeroShotLabeller(dying).proba(texts, cache=cache)
        # a new process: everything labelled before the failure is on the store
        again = TeacherLabels(store, smol_llm.identity, shard_size=3)
        assert len(again) == 7
        counting = Counting(client)
        first = ZeroShotLabeller(counting).proba(texts, cache=again)
        assert counting.calls == 3
        manifest = again.compact()
        assert manifest["count"] == 10 and manifest["teacher"] == smol_llm.identity
        assert store.list(f"{again.prefix}/parts") == []
        fresh = TeacherLabels(store, smol_llm.identity)
        counting = Counting(client)
        second = ZeroShotLabeller(counting).proba(texts, cache=fresh)
        assert counting.calls == 0 and np.allclose(first, second, atol=1e-6)


def test_labels_of_another_teacher_are_refused(smol_llm, tmp_path):
    store = LocalStore(tmp_path)
    cache = TeacherLabels(store, smol_llm.identity)
    cache.add("k", np.array([0.2, 0.3, 0.5]), mass=0.9, text="t")
    cache.flush()
    other = TeacherLabels(store, smol_llm.identity)
    other.prefix = cache.prefix
    other.teacher = "someone-else"
    with pytest.raises(Exception, match="is not 'someone-else'"):
        other.lookup()


def test_unreachable_endpoint_is_llm_unavailable():
    ep = LLMEndpoint(base_url="http://127.0.0.1:9/v1", model="m", identity="m@x")
    with LLMClient(ep, timeout_s=2) as client, pytest.raises(LLMUnavailable, match="unreachable"):
        client.chat([{"role": "user", "content": "hi"}])


def _cli(*args, env):
    return subprocess.run([sys.executable, "-c", "from shopsense.cli import main; main()",
                           *args], capture_output=True, text=True, env=env, timeout=600)


def test_evaluate_baseline_llm_follows_the_contract(smol_llm, home, tmp_path):
    data = tmp_path / "eval.jsonl"
    rows = [{"text": "Terrible, it broke on day one.", "label": "negative", "category": "x"},
            {"text": "Wonderful, I love it.", "label": "positive", "category": "x"},
            {"text": "Waste of money.", "label": "negative"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "SHOPSENSE_HOME": str(home), "SHOPSENSE_LLM_BASE_URL": smol_llm.base_url,
           "SHOPSENSE_LLM_MODEL": smol_llm.model}
    p = _cli("evaluate", "--data", str(data), "--baseline", "llm", "--json", env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["n"] == 3 and out["labels"] == ["negative", "positive"]
    assert out["model"]["name"] == "baseline:llm" and out["model"]["teacher"].endswith("@127.0.0.1")
    assert {"accuracy", "macro_f1", "per_class", "confusion", "per_category"} <= out.keys()
    # labels made before come from the teacher-label cache: a new text needs the LLM
    rows.append({"text": "Never again.", "label": "negative"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    down = _cli("evaluate", "--data", str(data), "--baseline", "llm", "--json",
                env={**env, "SHOPSENSE_LLM_BASE_URL": "http://127.0.0.1:9/v1"})
    assert down.returncode != 0 and "Traceback" not in down.stderr
    assert down.stderr.strip().startswith("error: LLM at http://127.0.0.1:9/v1 unreachable")


@pytest.mark.slow
def test_the_shipped_teacher_reads_clear_reviews_right(tmp_path):
    """The real Qwen2.5-Coder-1.5B (the default teacher), verified and loaded offline."""
    from shopsense.llm.server import EmbeddedServer
    from shopsense.llm.weights import embedded_model

    with EmbeddedServer(embedded_model(), context=512) as ep, LLMClient(ep) as client:
        p = ZeroShotLabeller(client).proba([
            "Stopped working after two days and support never answered. Avoid.",
            "Excellent sound, great battery, I use it every day. Highly recommended!"])
    assert p[0, 0] > p[0, 2] and p[1, 2] > p[1, 0]
