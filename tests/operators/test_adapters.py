"""Adapter resolution against a real ``mlflow server`` on PostgreSQL: a LLaVA version registered
the way the pipeline registers one (``shopsense.registry.log_and_register`` with the bundle's
``adapter/`` folder) is found by the operator through the registry's REST API, where
ray.serve.llm will load it, and each version is its own adapter id."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from operators.sentimentmodel import render
from operators.sentimentmodel.registry import RegistryClient
from operators.sentimentmodel.settings import RegistryEntry
from operators.sentimentmodel.spec import parse_spec
from shopsense import registry
from shopsense.settings import Settings

pytestmark = pytest.mark.timeout(300)


def llava_bundle(root: Path, rank: int) -> Path:
    """The files pipelines/train/llava.py save_bundle writes that matter here: the marker and
    the PEFT adapter folder (adapter_config.json + weights)."""
    b = root / f"bundle-{rank}"
    (b / "adapter").mkdir(parents=True)
    (b / "llava_bundle.json").write_text(json.dumps({"model_source": None}))
    (b / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "target_modules": ["q_proj", "v_proj"]}))
    (b / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    return b


@pytest.mark.asyncio
async def test_each_registered_llava_version_is_an_adapter_where_the_registry_keeps_it(
        mlflow_server_url, tmp_path, mlflow_uris_restored):
    name = f"shopsense-sentiment-llava-{uuid.uuid4().hex[:6]}"
    s = Settings(home=tmp_path / "home", mlflow_tracking_uri=mlflow_server_url, model_name=name)
    versions = []
    for rank, f1 in ((8, 0.7), (16, 0.8)):
        out = registry.log_and_register(
            s, bundle_dir=llava_bundle(tmp_path, rank), params={}, metrics={
                "eval_macro_f1": f1}, evaluation={}, eval_records=[{"text": "a", "label": "positive"}])
        versions.append(out["version"])
    spec = parse_spec({"model": {"uri": f"models:/{name}@champion"}, "backend": "vllm",
                       "resources": {"gpus": 1}})
    entry = RegistryEntry(name="test", url=mlflow_server_url)
    client = RegistryClient()
    try:
        assert await client.resolve(spec.model, registry=entry) == versions[1]
        uris = {v: await client.download_uri(spec.model, v, registry=entry) for v in versions}
    finally:
        await client.aclose()
    ids = set()
    for v, uri in uris.items():
        adapter = Path(urlparse(render.adapter_uri(uri)).path)
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA"
        assert (adapter / "adapter_model.safetensors").is_file()
        base, lora_id = render.lora_location(spec, uri)
        assert Path(urlparse(base).path, lora_id) == adapter
        ids.add(render.adapter_model_id(spec, uri))
    # one loading path for both versions (the LLM app does not change), two adapter ids
    assert len({render.lora_location(spec, u)[0] for u in uris.values()}) == 1
    assert len(ids) == 2
