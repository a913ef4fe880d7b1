"""Adversarial validation: ``run_validate(real, synthetic_uri, out_uri, ValidateConfig)``."""

from pipelines.validate.run import ValidateConfig, ValidationReport, run_validate

__all__ = ["ValidateConfig", "ValidationReport", "run_validate"]
