"""Scraping agent quality and speed against the demo shop; prints tables (and --json).

1. Full crawl (budget large enough for every page) with a fresh store: precision and recall of
   extracted reviews per site / markup style against the shop's ground truth, pages per
   second, requests, 429s, retries, failures, duplicates dropped.
2. Learning across runs: a fresh store, then two runs with the same page budget. Run 1 starts
   knowing nothing; run 2 starts from the source statistics, selectors, URL-pattern yields and
   frontier that run 1 persisted. Prints new valid reviews per page fetched for each run and
   where each run spent its pages.

    .venv/bin/python benchmarks/scrape_quality.py [--products 40] [--budget 80] [--json]
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
            for n in (1, 2):
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
    print(f"\nLearning across runs: same store, {args.budget} pages per run")
    print(f"{'run':>3s} {'pages':>5s} {'new':>5s} {'new/page':>8s} {'dups':>5s} {'fail':>4s}  "
          f"pages by site (new reviews)")
    for r in out["learning"]:
        spread = ", ".join(f"{k} {v} ({r['new_by_site'][k]})" for k, v in
                           r["pages_by_site"].items())
        print(f"{r['run']:3d} {r['pages']:5d} {r['new_reviews']:5d} "
              f"{r['new_reviews_per_page']:8.3f} {r['duplicates']:5d} {r['failures']:4d}  "
              f"{spread}")


if __name__ == "__main__":
    main()
