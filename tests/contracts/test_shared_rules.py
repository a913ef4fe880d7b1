"""Rules two deployables must agree on without importing each other, pinned here."""

import re
from pathlib import Path

import pytest
import yaml

from shopsense.registry import MODEL_URI_PATTERN, parse_model_uri

ROOT = Path(__file__).resolve().parents[2]

URIS = [("models:/shopsense-sentiment@champion", True), ("models:/m/12", True),
        ("models:/m@chal_lenger-2", True), ("models:/m", False), ("models:/m@", False),
        ("models:/m/1.5", False), ("models:/a/b/3", False), ("models:/m@ché", False),
        ("models:/m@a b", False), ("runs:/x/model", False), ("models:/m/1\n", False)]


def _crd_pattern() -> str:
    crd = yaml.safe_load((ROOT / "operators/sentimentmodel/crd.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    return props["spec"]["properties"]["model"]["properties"]["uri"]["pattern"]


@pytest.mark.parametrize("uri,ok", URIS)
def test_model_uri_rule_is_the_same_in_core_operator_and_crd(uri, ok):
    from operators.sentimentmodel import spec

    assert bool(re.fullmatch(MODEL_URI_PATTERN, uri)) is ok
    assert bool(spec._MODELS_URI.fullmatch(uri)) is ok
    assert bool(re.fullmatch(_crd_pattern(), uri)) is ok
    if ok:
        assert parse_model_uri(uri)[0] == uri.removeprefix("models:/").split("@")[0].split("/")[0]


def test_the_operator_copy_is_the_core_rule_verbatim():
    from operators.sentimentmodel import spec

    assert spec._MODELS_URI.pattern == MODEL_URI_PATTERN
