"""``schemathesis run`` as a module (``python -m tests.services.inference.schemathesis_cli``).

Hooks: schema-valid cases ("positive") get the few rules JSON Schema cannot state made true
before they are sent, so that "valid data is accepted" is a real check and not a list of
known refusals: an ``image`` string is replaced by a real PNG (a schema can say "string",
not "the base64 of a decodable image"); a review has text or an image, a search a query or
an image (a query when it reranks); a sparse search carries no image; a rating range is
ordered; a recent-predictions window has at most 720 buckets (such cases are skipped). Invalid
("negative") cases are sent as generated.

One compatibility shim: where ``urllib3-future`` has replaced ``urllib3`` (it installs under
the same module name), a connection pool's ``pools`` has no ``keys()``, which schemathesis's
count of opened connections (used only to resend a request on a keep-alive connection the
server dropped) relies on. There the count is taken as unchanged: such a request is resent
once, as schemathesis does anyway. With the real urllib3 nothing is changed.
"""

import base64
import io
import math
import sys

import schemathesis
from schemathesis.cli import schemathesis as cli
from schemathesis.generation.modes import GenerationMode
from schemathesis.transport import requests as st_requests

_count = st_requests._count_opened_connections


def _count_opened_connections(session):
    try:
        return _count(session)
    except AttributeError:  # urllib3-future's TrafficPolice
        return 0


st_requests._count_opened_connections = _count_opened_connections



def _png_b64() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (120, 60, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


PNG = _png_b64()


def _real_image(item):
    """A real PNG for an image string; and text when there is neither (text or image: a rule
    across two fields)."""
    if isinstance(item, dict) and isinstance(item.get("image"), str):
        item["image"] = PNG
    if isinstance(item, dict) and item.get("image") is None and not (
            isinstance(item.get("text"), str) and item["text"].strip()):
        item["text"] = "fine product"
    return item


_CONTROL = set(map(chr, range(0x20))) | {"\x7f"}


def _has_control(body) -> bool:
    items = [body, *(body.get("items") or [])] if isinstance(body, dict) else []
    return any(isinstance(i, dict) and isinstance(i.get(f), str) and _CONTROL & set(i[f])
               for i in items for f in ("category", "product"))


@schemathesis.hook
def filter_case(context, case):
    """Skip "valid" cases that are not: category/product strings with a control character,
    which the generator produces for the pattern ``^[^\x00-\x1f\x7f]*$`` although the
    pattern excludes them (checked with Python's and pydantic's regex engines: they refuse
    them, as the API does), and a recent-predictions window of more than 720 buckets (a rule
    across two fields)."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return True
    if _has_control(case.body):
        return False
    if case.operation.path == "/v1/predictions/recent" and isinstance(case.query, dict):
        minutes, step = case.query.get("minutes", 60), case.query.get("bucket_seconds")
        if isinstance(minutes, int) and isinstance(step, int) and minutes * 60 / step > 720:
            return False
    return True


@schemathesis.hook
def map_case(context, case):
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    path, body = case.operation.path, case.body
    if isinstance(body, dict):
        if path == "/v1/sentiment":
            _real_image(body)
        for item in body.get("items") or []:
            _real_image(item)
        if path == "/v1/search":
            if isinstance(body.get("image"), str):
                body["image"] = PNG
            has_query = isinstance(body.get("query"), str) and body["query"].strip()
            if not has_query and (body.get("image") is None or body.get("rerank")):
                body["query"] = "battery"  # a query or an image; reranking needs a query
            if body.get("mode") == "sparse":
                body.pop("image", None)
                if not (isinstance(body.get("query"), str) and body["query"].strip()):
                    body["query"] = "battery"
            rating = (body.get("filters") or {}).get("rating") or {}
            if rating.get("gte") is not None and rating.get("lte") is not None \
                    and rating["gte"] > rating["lte"]:
                rating["gte"], rating["lte"] = rating["lte"], rating["gte"]
    if path == "/v1/predictions/recent" and isinstance(case.query, dict):
        minutes = case.query.get("minutes", 60)
        step = case.query.get("bucket_seconds")
        if isinstance(minutes, int) and isinstance(step, int) and minutes * 60 / step > 720:
            case.query["bucket_seconds"] = min(3600, math.ceil(minutes * 60 / 720))
    return case


if __name__ == "__main__":
    sys.argv[0] = "schemathesis"
    sys.exit(cli())
