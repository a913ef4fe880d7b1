"""``shopsense demo-shop`` and ``shopsense scrape`` (each pipeline step registers its own
commands through the ``shopsense.commands`` entry points)."""

from __future__ import annotations

import json
import logging
import signal
import time

import typer

log = logging.getLogger("shopsense")


def demo_shop_cmd(
    base_port: int = typer.Option(8701, help="site i listens on base_port + i"),
    products: int = typer.Option(40, help="products per site"),
    rate_limit: float = typer.Option(20.0, help="HTML pages per second per site before 429"),
) -> None:
    """Serve the demo shop (5 sites built from the Blitzer products and reviews) on 127.0.0.1
    until Ctrl-C."""
    from pipelines.scrape.shop import DemoShop
    from shopsense.settings import get_settings

    shop = DemoShop(get_settings().data_dir, products_per_site=products, base_port=base_port,
                    rate_limit=rate_limit or None).start()
    for site in shop.sites:
        typer.echo(f"{site.spec.name:11s} {site.spec.style:10s} {site.url}/")
    typer.echo(f"{len(shop.ground_truth())} reachable reviews; Ctrl-C stops", err=True)
    stop = {"flag": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    while not stop["flag"]:
        time.sleep(0.3)
    shop.stop()


def scrape_cmd(
    seeds: list[str] = typer.Argument(None, help="start URLs (default: the demo shop's sites "
                                      "on ports 8701-8705)"),
    dataset: str = typer.Option("scraped/reviews", help="dataset prefix in the store"),
    store: str | None = typer.Option(None, help="store root URI (default: settings)"),
    max_pages: int = typer.Option(200, help="page budget of this run"),
    concurrency: int = typer.Option(4, help="browser tabs"),
    no_learn: bool = typer.Option(False, "--no-learn", help="ignore and do not update the "
                                  "per-source state"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Scrape reviews with Playwright + Chromium into a dataset (resumes an interrupted run).
    With SHOPSENSE_LLM_BASE_URL set, an OpenAI-compatible LLM proposes selectors and priors."""
    from pipelines.scrape.agent import ScrapeConfig, run_scrape
    from shopsense.llm import chat_model_from_env

    seeds = seeds or [f"http://127.0.0.1:{8701 + i}/" for i in range(5)]
    cfg = ScrapeConfig(seeds=seeds, store_uri=store, dataset=dataset, max_pages=max_pages,
                       concurrency=concurrency, learn=not no_learn, progress=True)
    res = run_scrape(cfg, chat=chat_model_from_env())
    if as_json:
        typer.echo(res.model_dump_json(indent=2, exclude={"extractions"}))
        return
    typer.echo(f"{res.pages} pages in {res.seconds} s ({res.pages_per_second} pages/s), "
               f"{res.new_reviews} new reviews ({res.new_reviews_per_page}/page), "
               f"{res.duplicates} duplicates, {res.failures} failed pages"
               f"{' (resumed)' if res.resumed else ''}")
    for src, r in res.per_source.items():
        typer.echo(f"  {src:22s} pages {r.pages:4d} new {r.new_reviews:4d} dups "
                   f"{r.duplicates:4d} 429s {r.rate_limited:3d} fail {r.failures:3d} "
                   f"{json.dumps(r.methods)}")
    typer.echo(f"dataset {res.dataset_uri}: {res.manifest.count} reviews "
               f"(digest {res.manifest.digest[:12]})")


def register(app: typer.Typer) -> None:
    app.command("demo-shop")(demo_shop_cmd)
    app.command("scrape")(scrape_cmd)
