"""The offline model files: found through package metadata, joined in numeric order, checked."""

import hashlib
import sys

import pytest

from shopsense.errors import LLMUnavailable, WeightsCorrupt
from shopsense.llm import weights
from shopsense.llm.weights import EMBEDDED, EmbeddedLLM, installed, materialise


def _fake_dist(root, name, version, files):
    """An installed distribution (dist-info with RECORD) holding ``files`` {relpath: bytes}."""
    pkg = name.replace("-", "_")
    info = root / f"{pkg}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = []
    for rel, data in files.items():
        path = root / pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        record.append(f"{pkg}/{rel},,")
    (info / "RECORD").write_text("\n".join(record + [f"{info.name}/RECORD,,"]) + "\n")


@pytest.fixture()
def sliced(tmp_path, monkeypatch):
    """A model of 11 slices (part10 and part11 sort after part9 only numerically)."""
    root = tmp_path / "site"
    chunks = [bytes([i]) * (1000 + i) for i in range(1, 12)]
    for i, chunk in enumerate(chunks, 1):
        _fake_dist(root, f"fake-slices-part{i}", "0.1.0", {f"data/part{i:02d}.bin": chunk})
    monkeypatch.syspath_prepend(str(root))
    joined = b"".join(chunks)
    model = EmbeddedLLM(key="fake-sliced", name="Fake", size=len(joined),
                        sha256=hashlib.sha256(joined).hexdigest(), licence="test",
                        packages=tuple((f"fake-slices-part{i}", "0.1.0") for i in range(1, 12)),
                        file_pattern=r"/data/part\d+\.bin$")
    return model, joined, tmp_path / "cache"


def test_joins_slices_in_numeric_order_and_verifies(sliced):
    model, joined, cache = sliced
    assert installed(model)
    path = materialise(model, cache)
    assert path.read_bytes() == joined
    assert materialise(model, cache) == path  # second call: verified in place
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left


def test_wrong_checksum_is_refused_and_nothing_is_left(sliced):
    model, _, cache = sliced
    bad = EmbeddedLLM(**{**model.__dict__, "sha256": "0" * 64})
    with pytest.raises(WeightsCorrupt, match="sha256"):
        materialise(bad, cache)
    assert not any(cache.iterdir())


def test_a_damaged_cached_file_is_joined_again(sliced):
    model, joined, cache = sliced
    path = materialise(model, cache)
    path.write_bytes(b"x" * len(joined))  # same size, other bytes
    assert materialise(model, cache).read_bytes() == joined


def test_missing_or_wrong_version_names_the_package_and_the_fix(sliced):
    model, _, cache = sliced
    missing = EmbeddedLLM(**{**model.__dict__,
                             "packages": (*model.packages, ("fake-slices-part99", "0.1.0"))})
    with pytest.raises(LLMUnavailable, match="fake-slices-part99==0.1.0 is not installed.*make llm"):
        materialise(missing, cache)
    other = EmbeddedLLM(**{**model.__dict__, "packages": (("fake-slices-part1", "9.9"),)})
    with pytest.raises(LLMUnavailable, match="pinned version is 9.9"):
        materialise(other, cache)
    assert not installed(missing)


def test_the_embedded_models_are_never_imported():
    for model in EMBEDDED.values():
        for dist, _ in model.packages:
            assert dist.replace("-", "_") not in sys.modules


@pytest.mark.parametrize("key", sorted(EMBEDDED))
def test_installed_models_have_their_published_bytes(key, tmp_path):
    """The real packages ``make llm`` installs (the tests need them)."""
    model = EMBEDDED[key]
    assert installed(model), f"{key} is not installed: run make llm"
    path = materialise(model, tmp_path) if len(model.packages) == 1 else materialise(model)
    assert path.stat().st_size == model.size


def test_unknown_key():
    with pytest.raises(LLMUnavailable, match="unknown embedded LLM"):
        weights.embedded_model("nope")
