"""Scraping agent quality and speed against the demo shop; prints tables (and --json).

1. Full crawl (budget large enough for every page) with a fresh store: precision and recall of
   extracted reviews per site / markup style against the shop's ground truth, pages per
   second, requests, 429s, retries, failures, duplicates dropped.
2. Learning across runs: a fresh store, then two runs with the same page budget. Run 1 starts
   knowing nothing; run 2 starts from the source statistics, selectors, URL-pattern yields and
   frontier that run 1 persisted. Prints new valid reviews per page fetched for each run and
   where each run spent its pages.
3. With ``--llm``: the full crawl again with the LLM advising (the configured LLM; the embedded
   Qwen2.5-Coder-1.5B server when none is set), against the crawl without it from part 1:
   per site, the selectors used (and whose: ``llm`` or ``heuristic``), the LLM proposals
   rejected on the page and why, precision and recall, and the time the LLM cost.

    .venv/bin/python benchmarks/scrape_quality.py [--products 40] [--budget 80] [--llm] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.scrape.agent import ScrapeConfig, run_scrape
from pipelines.scrape.measure import score_extractions
from pipelines.scrape.shop import DemoShop


def _names(shop: DemoShop) -> dict[str, str]:
    return {f"127.0.0.1:{s.port}": s.spec.name for s in shop.sites}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--products", type=int, default=40, help="products per site")
    ap.add_argument("--budget", type=int, default=80, help="pages per run in part 2")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--llm", action="store_true", help="part 3: the full crawl with the LLM")
    ap.add_argument("--skip-learning", action="store_true", help="skip part 2")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out: dict = {"load_average_start": os.getloadavg()[0]}

    with DemoShop(products_per_site=args.products) as shop:
        names = _names(shop)
        truth = shop.ground_truth()
        # ------------------------------------------------------------------ 1. full crawl
        with tempfile.TemporaryDirectory() as d:
            cfg = ScrapeConfig(seeds=shop.urls, store_uri=Path(d).as_uri(), max_pages=100_000,
                               concurrency=args.concurrency, seed=args.seed,
                               record_extractions=True)
            t = time.perf_counter()
            res = run_scrape(cfg)
            wall = time.perf_counter() - t
        scores = score_extractions(res.extractions, truth)
        out["full_crawl"] = {
            "pages": res.pages, "requests": res.requests, "seconds": res.seconds,
            "wall_seconds_incl_browser_start_and_publish": round(wall, 2),
            "pages_per_second": res.pages_per_second, "new_reviews": res.new_reviews,
            "duplicates_dropped": res.duplicates, "failures": res.failures,
            "per_site": {
                names[h]: {**scores[names[h]],
                           **{k: v for k, v in r.model_dump().items()
                              if k in ("pages", "requests", "rate_limited", "retries",
                                       "failures", "duplicates", "new_reviews",
                                       "images", "images_skipped", "methods")}}
                for h, r in res.per_source.items()
            },
            "disallowed_requests": len(shop.requests_to("/outlet")) +
            len(shop.requests_to("/account")),
        }
        for site in shop.sites:  # part 2 starts from a shop that has served nothing
            site.log.clear()
            site.hits.clear()

        # --------------------------------------------------------- 2. learning across runs
        with tempfile.TemporaryDirectory() as d:
            runs = []
            for n in (() if args.skip_learning else (1, 2)):
                cfg = ScrapeConfig(seeds=shop.urls, store_uri=Path(d).as_uri(),
                                   max_pages=args.budget, concurrency=args.concurrency,
                                   seed=args.seed + n)
                r = run_scrape(cfg)
                runs.append({
                    "run": n, "pages": r.pages, "new_reviews": r.new_reviews,
                    "new_reviews_per_page": r.new_reviews_per_page,
                    "duplicates": r.duplicates, "failures": r.failures,
                    "dataset_count": r.manifest.count, "pages_per_second": r.pages_per_second,
                    "pages_by_site": {names[h]: s.pages for h, s in r.per_source.items()},
                    "new_by_site": {names[h]: s.new_reviews for h, s in r.per_source.items()},
                })
        out["learning"] = runs
        if args.llm:
            out["with_llm"] = _llm_crawl(shop, args, names, truth)

    if args.json:
        print(json.dumps(out, indent=2))
        return
    f = out["full_crawl"]
    print(f"\nFull crawl of {len(shop.sites)} sites, {args.products} products each "
          f"(load average at start {out['load_average_start']:.1f})")
    print(f"{'site':11s} {'style':10s} {'truth':>5s} {'extr.':>5s} {'prec.':>6s} {'recall':>6s} "
          f"{'pages':>5s} {'req.':>5s} {'429':>4s} {'retry':>5s} {'fail':>4s} {'dups':>4s} "
          f"{'imgs':>4s} {'capped':>6s}  method")
    for name, s in f["per_site"].items():
        print(f"{name:11s} {s['style']:10s} {s['truth']:5d} {s['extracted']:5d} "
              f"{s['precision']:6.3f} {s['recall']:6.3f} {s['pages']:5d} {s['requests']:5d} "
              f"{s['rate_limited']:4d} {s['retries']:5d} {s['failures']:4d} "
              f"{s['duplicates']:4d} {s['images']:4d} {s['images_skipped']:6d}  "
              f"{','.join(s['methods'])}")
    print(f"pages {f['pages']}, requests {f['requests']}, {f['seconds']} s crawling -> "
          f"{f['pages_per_second']} pages/s ({f['wall_seconds_incl_browser_start_and_publish']} s "
          f"wall incl. browser start and publish); requests to robots-disallowed paths: "
          f"{f['disallowed_requests']}")
    if "with_llm" in out:
        g = out["with_llm"]
        print(f"\nFull crawl with the LLM ({g['teacher']}): {g['llm_calls']} LLM calls, "
              f"{g['seconds']} s crawling ({f['seconds']} s without), pages "
              f"{g['pages']} ({f['pages']} without)")
        print(f"{'site':11s} {'selectors':>10s} {'prec.':>6s} {'recall':>6s} {'(without)':>14s}  "
              f"LLM proposals rejected on the page")
        for name, s2 in g["per_site"].items():
            base = f["per_site"].get(name, {})
            print(f"{name:11s} {s2['selectors'] or '-':>10s} {s2['precision']:6.3f} "
                  f"{s2['recall']:6.3f}   {base.get('precision', 0):.3f}/{base.get('recall', 0):.3f}"
                  f"  {'; '.join(s2['llm_rejected']) or '-'}")
    print(f"\nLearning across runs: same store, {args.budget} pages per run")
    print(f"{'run':>3s} {'pages':>5s} {'new':>5s} {'new/page':>8s} {'dups':>5s} {'fail':>4s}  "
          f"pages by site (new reviews)")
    for r in out["learning"]:
        spread = ", ".join(f"{k} {v} ({r['new_by_site'][k]})" for k, v in
                           r["pages_by_site"].items())
        print(f"{r['run']:3d} {r['pages']:5d} {r['new_reviews']:5d} "
              f"{r['new_reviews_per_page']:8.3f} {r['duplicates']:5d} {r['failures']:4d}  "
              f"{spread}")


def _llm_crawl(shop: DemoShop, args, names: dict[str, str], truth) -> dict:
    """The full crawl of part 1 with the configured LLM proposing selectors and priors."""
    from pipelines.scrape.state import load_state
    from shopsense.llm import chat_model_for
    from shopsense.llm.server import llm_endpoint
    from shopsense.store import LocalStore

    for site in shop.sites:
        site.log.clear()
        site.hits.clear()
    with llm_endpoint() as ep, tempfile.TemporaryDirectory() as d:
        cfg = ScrapeConfig(seeds=shop.urls, store_uri=Path(d).as_uri(), max_pages=100_000,
                           concurrency=args.concurrency, seed=args.seed,
                           record_extractions=True)
        res = run_scrape(cfg, chat=chat_model_for(ep, timeout_s=600))
        store = LocalStore(d)
        state = {h: load_state(store, cfg.state_prefix, h).model_dump(mode="json")
                 for h in res.per_source}
    scores = score_extractions(res.extractions, truth)
    per_site = {}
    for host, r in res.per_source.items():
        st = state.get(host, {})
        sel = st.get("selectors") or {}
        per_site[names[host]] = {
            **scores[names[host]], "methods": r.methods,
            "selectors": sel.get("origin") if sel else None,
            "llm_rejected": [f for f in st.get("selector_failures", []) if f.startswith("llm")]}
    return {"teacher": ep.identity, "llm_calls": res.llm_calls, "seconds": res.seconds,
            "pages": res.pages, "pages_per_second": res.pages_per_second, "per_site": per_site}


if __name__ == "__main__":
    main()
