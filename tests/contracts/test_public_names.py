"""Each package's public names, pinned: a name added to, or dropped from, a package's ``__all__``
(or, for a package without one, a public name appearing in its ``__init__``) shows here, so an
API change is a decision made in this file, not an accident.

Every package under the four code folders is listed; a new package fails the first test until
it is added."""

import __future__
import importlib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> its __all__; None: the package declares no __all__ and exports nothing at all
PUBLIC = {
    "shopsense": ["LABELS", "MODEL_NAME", "__version__"],
    "shopsense.data": None,
    "shopsense.images": [
        "CATEGORIES", "COLOURS", "SUPPORTED_FORMATS", "AllowList", "ImageDecoder",
        "ImageFetcher", "ImageLimits", "PhotoSpec", "address_block_reason", "decode_base64",
        "decode_data_url", "decode_image", "encode_jpeg", "fetch_image", "image_sha256",
        "image_url", "is_public_address", "load_image_bytes", "parse_retry_after",
        "probe_image", "render_dataset", "render_photo", "resolve_host", "sniff_format",
        "spec_for_label"],
    "shopsense.llm": [
        "DEFAULT_EMBEDDED", "EMBEDDED", "EmbeddedLLM", "LLMUnavailable", "WeightsCorrupt",
        "chat_model_for", "chat_model_from_env", "embedded_model", "materialise"],
    "shopsense.model": None,
    "services": None,
    "services.inference": None,
    "services.inference.backends": ["describe_backend", "make_backend"],
    "services.inference.web": ["STATIC_DIR", "mount_ui", "router"],
    "services.retrieval": [
        "Filters", "Hit", "HybridRetriever", "MAX_K", "RetrievalSettings", "SearchArgs",
        "StoreUnavailable", "check_search"],
    "services.retrieval.offline": None,
    "pipelines": None,
    "pipelines.label": ["AutoLabelConfig", "AutoLabelReport", "auto_label", "run_auto_label"],
    "pipelines.scrape": ["DemoShop", "ScrapeConfig", "ScrapeResult", "run_scrape"],
    "pipelines.synthesize": ["GenerationSpec", "SynthesizeResult", "run_synthesize"],
    "pipelines.train": ["DistributedConfig", "DistributedResult", "train_distributed"],
    "pipelines.validate": ["ValidateConfig", "ValidationReport", "run_validate"],
    "operators": None,
    "operators.sentimentmodel": [
        "CRD_PATH", "Observation", "OperatorSettings", "RayServiceHealth", "decide", "load_crd",
        "parse_spec", "problems", "register", "render_all", "render_httproute",
        "render_network_policy", "render_rayservice", "render_track", "serve_config"],
}


def test_every_package_is_pinned():
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".")
             for top in ("shopsense", "services", "pipelines", "operators")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found == set(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names(name):
    module = importlib.import_module(name)
    expected = PUBLIC[name]
    if expected is None:
        assert not hasattr(module, "__all__")
        public = [n for n, v in vars(module).items() if not n.startswith("_")
                  and not isinstance(v, types.ModuleType | __future__._Feature)]
        assert public == [], f"{name} exports {public} without an __all__"
        return
    assert sorted(module.__all__) == sorted(expected)
    assert len(set(module.__all__)) == len(module.__all__), "a name listed twice"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
