"""Synthetic agent: ``run_synthesize(GenerationSpec, out_uri) -> SynthesizeResult``."""

from pipelines.synthesize.run import SynthesizeResult, run_synthesize
from pipelines.synthesize.spec import GenerationSpec

__all__ = ["GenerationSpec", "SynthesizeResult", "run_synthesize"]
