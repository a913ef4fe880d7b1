"""Inference engines for the text encoder (MiniLM, LoRA merged): one seam, chosen by a setting.

Every engine turns token ids and their attention mask into mean-pooled 384-d features, exactly
what :meth:`SentimentModel.encode_text` computes; the fusion head, the tokenizer and the image
branch stay in torch. ``SHOPSENSE_SERVE__TEXT_ENGINE`` picks one for serving:

``torch``
    the module itself (the reference; what training and evaluation use).
``torch-int8``
    torch dynamic quantisation: every ``nn.Linear`` with int8 weights, activations quantised
    per batch (``torch.ao.quantization.quantize_dynamic``).
``onnx``
    ONNX Runtime on the encoder exported to ONNX from the loaded weights (``torch.onnx``'s
    TorchScript exporter, mean pooling inside the graph), with ONNX Runtime's transformer
    graph fusions (attention, LayerNorm, GELU) applied to the file.
``onnx-int8``
    the same graph with ONNX Runtime's dynamic int8 quantisation of its MatMul weights.
``openvino``
    OpenVINO's CPU runtime on the same (unfused) ONNX file.

Nothing is downloaded: the ONNX files are exported here, from the weights already in memory
(the offline MiniLM package plus the bundle's LoRA adapter), into a cache folder keyed by a
digest of those weights and of the exporter's versions (``<SHOPSENSE_HOME>/cache/text-engines``
by default). The first load of a model exports it (tens of seconds on 2 cores); later loads, and
other processes, reuse the file. Writes are atomic (each file renamed into place), so concurrent
loads never see half a file. How close each engine's predictions are to ``torch`` on held-out
reviews, and how fast each is, is measured by ``benchmarks/speed.py --engines``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Protocol, get_args

import numpy as np
import torch
from torch import nn

from shopsense.model.encoders import mean_pool
from shopsense.settings import TextEngineName

log = logging.getLogger(__name__)

TEXT_ENGINES: tuple[str, ...] = get_args(TextEngineName)

# Bump when the exported graph changes shape or meaning: old cache entries are then ignored.
EXPORT_FORMAT = 1
ONNX_OPSET = 17


class TextEngine(Protocol):
    """Mean-pooled features of a tokenized batch: ``(n, seq)`` ids and mask -> ``(n, dim)``."""

    name: str

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


class _Pooled(nn.Module):
    """The encoder and its mean pooling as one module (what every engine computes)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)


class TorchTextEngine:
    """The torch module, optionally with int8 dynamic quantisation of its linear layers."""

    def __init__(self, encoder: nn.Module, *, int8: bool = False) -> None:
        module = _Pooled(encoder).eval()
        if int8:
            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the torch.ao deprecation notice
                module = quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)
        self.module = module
        self.name = "torch-int8" if int8 else "torch"

    @torch.inference_mode()
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.module(input_ids, attention_mask)


class OnnxRuntimeTextEngine:
    """An ONNX Runtime session over an exported encoder file (thread-safe ``run``)."""

    def __init__(self, path: Path, *, name: str, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path
        self.name = name

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": input_ids.numpy().astype(np.int64, copy=False),
                 "attention_mask": attention_mask.numpy().astype(np.int64, copy=False)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


class OpenVINOTextEngine:
    """OpenVINO's CPU plugin over the exported ONNX file."""

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._local = threading.local()  # an infer request is not thread-safe: one per thread
        self.path = path
        self.name = "openvino"

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        out = req.infer({"input_ids": input_ids.numpy().astype(np.int64, copy=False),
                         "attention_mask": attention_mask.numpy().astype(np.int64, copy=False)})
        return torch.from_numpy(np.array(out[self.compiled.output(0)], dtype=np.float32))


# -- export cache -----------------------------------------------------------------------------


def weights_digest(module: nn.Module) -> str:
    """sha256 over every tensor of the module's state (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    from shopsense.settings import get_settings

    return get_settings().resolved_home() / "cache" / "text-engines"


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "format": str(EXPORT_FORMAT), "opset": str(ONNX_OPSET)}


def _export_onnx(encoder: nn.Module, out: Path) -> None:
    """The encoder and its mean pooling to ONNX (dynamic batch and sequence length)."""
    module = _Pooled(encoder).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2204, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    axes = {"input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"}, "features": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-level shape checks
        torch.onnx.export(module, (ids, mask), str(out), input_names=["input_ids",
                          "attention_mask"], output_names=["features"], dynamic_axes=axes,
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)


def _fuse_transformer(src: Path, out: Path, encoder: nn.Module) -> None:
    """ONNX Runtime's BERT graph fusions (attention, skip-LayerNorm, GELU), offline."""
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = encoder.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimize_model(str(src), model_type="bert", num_heads=cfg.num_attention_heads,
                               hidden_size=cfg.hidden_size, opt_level=1, use_gpu=False,
                               only_onnxruntime=False)
    model.save_model_to_file(str(out))


def _quantize_int8(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused graph holds ONNX Runtime's own operators, which ONNX shape inference cannot
    # type: their outputs are float32.
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


FILES = {"plain": "encoder.onnx", "fused": "encoder-fused.onnx",
         "int8": "encoder-fused-int8.onnx"}


def _cache_folder(encoder: nn.Module, cache_dir: Path | None) -> Path:
    """``<cache_dir>/<key>``: the key digests the weights and the exporter's versions. An
    unwritable cache folder falls back to a private temporary one (exported again by each
    process)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    versions = _versions()
    key = hashlib.sha256((weights_digest(encoder) + json.dumps(versions, sort_keys=True))
                         .encode()).hexdigest()[:24]
    folder = cache_dir / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        log.warning("text-engine cache %s is not writable (%s): exporting into a temporary "
                    "folder", cache_dir, exc)
        folder = Path(tempfile.mkdtemp(prefix="shopsense-text-engine-")) / key
        folder.mkdir()
    meta = folder / "meta.json"
    if not meta.is_file():
        _atomic_write(meta, lambda tmp: tmp.write_text(json.dumps({"key": key, **versions},
                                                                  indent=2)))
    return folder


def _atomic_write(final: Path, make) -> None:
    """``make(tmp)`` writes a file beside ``final``, then it is renamed into place: readers
    (other processes too) see the whole file or none. A racing writer's file is as good."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        make(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def onnx_file(encoder: nn.Module, kind: str, cache_dir: Path | None = None) -> Path:
    """The exported file of this encoder of ``kind`` (``plain``, ``fused`` or ``int8``), made
    on first use with whatever it is derived from (plain -> fused -> int8)."""
    folder = _cache_folder(encoder, cache_dir)
    steps = {"plain": (None, lambda _src, out: _export_onnx(encoder, out)),
             "fused": ("plain", lambda src, out: _fuse_transformer(src, out, encoder)),
             "int8": ("fused", _quantize_int8)}

    def ensure(k: str) -> Path:
        final = folder / FILES[k]
        if final.is_file():
            return final
        parent, make = steps[k]
        src = ensure(parent) if parent else None
        log.info("text engine: writing %s (once per model) in %s", FILES[k], folder)
        _atomic_write(final, lambda tmp: make(src, tmp))
        return final

    return ensure(kind)


def build_text_engine(name: str, encoder: nn.Module, *, threads: int = 0,
                      cache_dir: Path | None = None) -> TextEngine:
    """The engine called ``name`` over ``encoder`` (a loaded BertModel, LoRA merged)."""
    if name not in TEXT_ENGINES:
        raise ValueError(f"unknown text engine {name!r}; choose {', '.join(TEXT_ENGINES)}")
    if name in ("torch", "torch-int8"):
        return TorchTextEngine(encoder, int8=name == "torch-int8")
    if name == "onnx":
        return OnnxRuntimeTextEngine(onnx_file(encoder, "fused", cache_dir), name="onnx",
                                     threads=threads)
    if name == "onnx-int8":
        return OnnxRuntimeTextEngine(onnx_file(encoder, "int8", cache_dir), name="onnx-int8",
                                     threads=threads)
    return OpenVINOTextEngine(onnx_file(encoder, "plain", cache_dir), threads=threads)
