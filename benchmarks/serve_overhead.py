"""The ceiling of the Ray Serve HTTP path on this machine, with no model at all.

    .venv/bin/python benchmarks/serve_overhead.py [--load wrk] [--seconds 10] [--repeats 3]

Serves two model-free applications through the same Serve proxy as shopsense and loads them
exactly as ``speed.py`` loads ``POST /v1/sentiment``:

* ``echo, 1 deployment``: a FastAPI ingress that validates the same request body and returns a
  constant prediction;
* ``echo, 2 deployments``: the same ingress calling a second deployment through a handle, the
  shape of the shopsense application (ingress -> classifier), without the model.

Their throughput bounds what any model can reach through this path here; the ratio of
shopsense's figure (from ``speed.py``) to these tells how much is the model and how much is
Serve itself.
"""



import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pydantic import BaseModel  # noqa: E402
from speed import free_port, run_load  # noqa: E402


class Req(BaseModel):
    text: str | None = None
    image: str | None = None


def build(kind: str):
    from fastapi import FastAPI
    from ray import serve

    answer = {"label": "positive", "scores": {"negative": 0.1, "neutral": 0.1, "positive": 0.8},
              "modalities": ["text"], "latency_ms": 0.0}

    @serve.deployment(name="Echo", max_ongoing_requests=256)
    class Echo:
        async def predict(self, text: str) -> dict:
            return answer

    def app_builder(handle=None):
        api = FastAPI()

        @api.post("/v1/sentiment")
        async def sentiment(req: Req) -> dict:
            if handle is None:
                return answer
            return await handle.predict.remote(req.text or "")

        return api

    if kind == "1":
        @serve.deployment(name="EchoAPI", max_ongoing_requests=512,
                          ray_actor_options={"num_cpus": 0})
        @serve.ingress()
        class One:
            def __serve_build_asgi_app__(self):
                return app_builder()

        return One.bind()

    @serve.deployment(name="EchoAPI", max_ongoing_requests=512,
                          ray_actor_options={"num_cpus": 0})
    @serve.ingress()
    class Two:
        def __init__(self, echo) -> None:
            self.echo = echo

        def __serve_build_asgi_app__(self):
            return app_builder(self.echo)

    return Two.bind(Echo.bind())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--load", choices=["httpx", "wrk"], default="httpx")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", default="1,32")
    args = ap.parse_args()
    import ray
    from ray import serve

    port = free_port()
    ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    rows = []
    try:
        for kind, label in (("1", "echo, 1 deployment"), ("2", "echo, 2 deployments")):
            serve.run(build(kind), name="echo", route_prefix="/")
            for c in [int(x) for x in args.concurrency.split(",")]:
                r = run_load(f"http://127.0.0.1:{port}/v1/sentiment", concurrency=c,
                             seconds=args.seconds, warmup=2, repeats=args.repeats,
                             tool=args.load)
                rows.append((label, c, r))
                print(f"[overhead] {label} c={c}: {r['rps']:.1f} req/s p50 {r['p50_ms']:.1f} ms",
                      file=sys.stderr)
            serve.delete("echo")
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"Ray Serve HTTP path without a model ({args.load}, {args.seconds:.0f} s x "
          f"{args.repeats}, medians; {os.cpu_count()} cores)")
    print(f"{'application':24s} {'concurrency':>11s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s}")
    for label, c, r in rows:
        print(f"{label:24s} {c:11d} {r['rps']:8.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['errors']:7d}")


if __name__ == "__main__":
    main()
