"""The SentimentModel operator (kopf): CRD model, RayService rendering, registry watch, rollout.

Public names; the modules behind them are free to move.
"""

from operators.sentimentmodel.handlers import register
from operators.sentimentmodel.policy import problems
from operators.sentimentmodel.render import (
    render_all, render_httproute, render_network_policy, render_rayservice, render_track,
    serve_config)
from operators.sentimentmodel.rollout import Observation, RayServiceHealth, decide
from operators.sentimentmodel.settings import OperatorSettings
from operators.sentimentmodel.spec import CRD_PATH, load_crd, parse_spec

__all__ = [
    "CRD_PATH",
    "Observation",
    "OperatorSettings",
    "RayServiceHealth",
    "decide",
    "load_crd",
    "parse_spec",
    "problems",
    "register",
    "render_all",
    "render_httproute",
    "render_network_policy",
    "render_rayservice",
    "render_track",
    "serve_config",
]
