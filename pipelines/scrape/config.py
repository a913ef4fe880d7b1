"""What a scraping run is given (:class:`ScrapeConfig`) and what it returns
(:class:`ScrapeResult`, with a :class:`SourceRun` per source)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from shopsense.errors import ShopsenseError
from shopsense.schemas import DatasetManifest

__all__ = ["CHROMIUM_ARGS", "ScrapeConfig", "ScrapeInterrupted", "ScrapeResult", "SourceRun"]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]


class ScrapeInterrupted(ShopsenseError):
    """The run stopped before publishing (the checkpoint lets the next run resume)."""


class ScrapeConfig(BaseModel):
    """One scraping run."""

    seeds: list[str] = Field(description="start URLs; each distinct host:port is a source")
    store_uri: str | None = Field(None, description="object store root; default from settings")
    dataset: str = Field("scraped/reviews", description="dataset prefix in the store")
    state_prefix: str = Field("scrape/state", description="where per-source state lives")
    checkpoint_prefix: str = Field("scrape/checkpoints", description="where a run checkpoints")
    max_pages: int = Field(200, ge=1, description="page budget of this run (distinct URLs)")
    concurrency: int = Field(4, ge=1, description="browser tabs working at once")
    per_host_concurrency: int = Field(2, ge=1)
    min_interval_s: float = Field(0.05, ge=0, description="per-host gap between requests; "
                                  "raised by Crawl-delay and on 429")
    max_interval_s: float = Field(2.0, description="ceiling of the adaptive interval")
    max_retries: int = Field(3, ge=0, description="retries of a page on 429/5xx/timeouts")
    backoff_s: float = Field(0.2, description="first retry delay; doubles, with jitter")
    max_retry_after_s: float = Field(
        120.0, description="longest Retry-After honoured; a server asking for more ends that "
        "host's run (never retried sooner than asked)")
    max_crawl_delay_s: float = Field(
        30.0, description="longest robots.txt Crawl-delay honoured; a source asking for more "
        "is not crawled")
    allow_hosts: list[str] = Field(
        default_factory=list, description="private hosts, host:port origins or CIDRs photos "
        "may come from, beside the seeds' own host:port origins (always allowed)")
    timeout_s: float = Field(15.0, description="page load timeout")
    render_timeout_s: float = Field(5.0, description="wait for script-rendered reviews")
    user_agent: str = "shopsense-bot/0.1"
    download_images: bool = True
    max_image_bytes: int = Field(2 * 1024 * 1024, description="larger photos are skipped")
    min_text_chars: int = 20
    near_duplicate_threshold: float = 0.7
    learn: bool = Field(True, description="use and update per-source state across runs")
    bandit: Literal["thompson", "uniform"] = "thompson"
    decay: float = Field(0.8, ge=0, le=1, description="weight of past runs' bandit evidence")
    checkpoint_every: int = Field(10, ge=1)
    max_llm_proposals: int = Field(3, description="LLM selector proposals tried per site "
                                   "(only on pages that show ratings)")
    seed: int | None = None
    chromium: str = "/usr/bin/chromium"
    chromium_args: list[str] = Field(default_factory=lambda: list(CHROMIUM_ARGS))
    progress: bool = False
    record_extractions: bool = Field(False, description="return every extracted record "
                                     "(before dedupe) in the result, for measurement")


class SourceRun(BaseModel):
    pages: int = 0
    requests: int = 0
    extracted: int = 0
    new_reviews: int = 0
    duplicates: int = 0
    invalid: int = 0
    failures: int = 0
    rate_limited: int = 0
    retries: int = 0
    robots_blocked: int = 0
    images: int = 0
    images_skipped: int = 0
    methods: dict[str, int] = Field(default_factory=dict)


class ScrapeResult(BaseModel):
    dataset_uri: str
    manifest: DatasetManifest
    run_id: str
    resumed: bool
    pages: int
    requests: int
    new_reviews: int
    duplicates: int
    failures: int
    seconds: float
    pages_per_second: float
    new_reviews_per_page: float
    per_source: dict[str, SourceRun]
    llm_calls: int = 0
    extractions: list[dict[str, Any]] = Field(default_factory=list, repr=False)

