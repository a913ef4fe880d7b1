"""Precision and recall of extracted reviews against the demo shop's ground truth."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from shopsense.text import normalise_text

__all__ = ["score_extractions"]


def score_extractions(extractions: list[dict[str, Any]], truth: list[dict[str, Any]]
                      ) -> dict[str, dict[str, Any]]:
    """Per site: precision (extracted records that are a true review of that site, with the
    right rating), recall (true reviews extracted at least once), counts, and the style.

    A record matches a true review of the same host when their normalised texts are equal
    and the ratings agree (within 0.01; a missing rating does not match); among equal texts,
    one of the same product and not yet matched is preferred."""
    by_host: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    sites: dict[str, dict[str, Any]] = {}
    for t in truth:
        by_host[t["host"]][normalise_text(t["text"])].append(t)
        sites.setdefault(t["host"], {"site": t["site"], "style": t["style"], "truth": 0})
        sites[t["host"]]["truth"] += 1
    found: dict[str, set[int]] = defaultdict(set)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # extracted, correct
    for e in extractions:
        host = e["host"]
        counts[host][0] += 1
        matches = by_host.get(host, {}).get(normalise_text(e["text"]), [])
        # the same text can sit on two products (Blitzer has a few): prefer the same product
        matches = sorted(matches, key=lambda t: (t["product_id"] != e.get("product_id"),
                                                 id(t) in found[host]))
        for t in matches:
            if e.get("rating") is not None and abs(float(e["rating"]) - t["rating"]) < 0.01:
                counts[host][1] += 1
                found[host].add(id(t))
                break
    out = {}
    for host, info in sites.items():
        extracted, correct = counts[host]
        out[info["site"]] = {
            "style": info["style"], "host": host, "truth": info["truth"],
            "extracted": extracted, "correct": correct,
            "precision": round(correct / extracted, 4) if extracted else 0.0,
            "recall": round(len(found[host]) / info["truth"], 4) if info["truth"] else 0.0,
        }
    return out
