"""Scraping agent: ``run_scrape(ScrapeConfig) -> ScrapeResult``; the demo shop to scrape."""

from pipelines.scrape.agent import ScrapeConfig, ScrapeResult, run_scrape
from pipelines.scrape.shop import DemoShop

__all__ = ["DemoShop", "ScrapeConfig", "ScrapeResult", "run_scrape"]
