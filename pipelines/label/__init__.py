"""Automatic labels for reviews that have none: ``run_auto_label(reviews_uri, out_uri, config)``."""

from pipelines.label.run import AutoLabelConfig, AutoLabelReport, auto_label, run_auto_label

__all__ = ["AutoLabelConfig", "AutoLabelReport", "auto_label", "run_auto_label"]
