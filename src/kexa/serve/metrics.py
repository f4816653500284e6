"""Prometheus metrics of `kexa serve` (`GET /metrics`), named after vLLM's (`vllm:` -> `kexa:`).

Gauges read the scheduler when scraped (no bookkeeping to drift); counters and histograms are fed by
the HTTP layer as tokens reach the client, so time to first token and inter-token latency include
queueing and the event hop from the scheduler thread, i.e. what a client sees. Each app gets its own
registry, so several servers (tests) can live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0)


class ServerMetrics:
    def __init__(self, scheduler, model_name: str):
        self.registry = r = CollectorRegistry()
        labels = {"model_name": model_name}
        g = Gauge("kexa:num_requests_running", "Requests in the running batch (holding a KV-cache slot).",
                  ["model_name"], registry=r)
        g.labels(**labels).set_function(lambda: scheduler.num_running)
        g = Gauge("kexa:num_requests_waiting", "Requests waiting for a slot.", ["model_name"], registry=r)
        g.labels(**labels).set_function(lambda: scheduler.num_waiting)
        g = Gauge("kexa:kv_cache_usage_perc", "Fraction of the KV cache's token capacity in use (0..1).",
                  ["model_name"], registry=r)
        g.labels(**labels).set_function(scheduler.kv_usage)
        self.prompt_tokens = Counter("kexa:prompt_tokens", "Prompt tokens processed.", ["model_name"],
                                     registry=r).labels(**labels)
        self.generation_tokens = Counter("kexa:generation_tokens", "Generated tokens.", ["model_name"],
                                         registry=r).labels(**labels)
        self._success = Counter("kexa:request_success", "Finished requests by finish reason.",
                                ["model_name", "finished_reason"], registry=r)
        self.ttft = Histogram("kexa:time_to_first_token_seconds", "Time from request arrival to its first token.",
                              ["model_name"], buckets=LATENCY_BUCKETS, registry=r).labels(**labels)
        self.itl = Histogram("kexa:inter_token_latency_seconds", "Time between consecutive tokens of a request.",
                             ["model_name"], buckets=LATENCY_BUCKETS, registry=r).labels(**labels)
        self.e2e = Histogram("kexa:e2e_request_latency_seconds", "Time from arrival to the last token.",
                             ["model_name"], buckets=LATENCY_BUCKETS, registry=r).labels(**labels)
        self.model_name = model_name
        if getattr(scheduler, "speculative", 0):
            r.register(_SpeculativeCollector(scheduler, model_name))

    def finished(self, reason: str) -> None:
        self._success.labels(model_name=self.model_name, finished_reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SpeculativeCollector:
    """MTP speculation counters, read from the scheduler's totals at scrape time (vLLM's
    spec_decode_* names): drafts (request-steps verified), draft tokens proposed, tokens accepted
    (also per draft position), and the acceptance rate accepted / proposed."""

    def __init__(self, scheduler, model_name: str):
        self.scheduler, self.model_name = scheduler, model_name

    def collect(self):
        s, name = self.scheduler, [self.model_name]
        proposed, accepted = sum(s.spec_drafted), sum(s.spec_accepted)
        for metric, doc, value in (
                ("kexa:spec_decode_num_drafts", "Speculative verify steps, summed over requests.", s.spec_steps),
                ("kexa:spec_decode_num_draft_tokens", "Draft tokens proposed by the MTP block.", proposed),
                ("kexa:spec_decode_num_accepted_tokens", "Draft tokens accepted by the main model.", accepted)):
            c = CounterMetricFamily(metric, doc, labels=["model_name"])
            c.add_metric(name, value)
            yield c
        c = CounterMetricFamily("kexa:spec_decode_num_accepted_tokens_per_pos",
                                "Draft tokens accepted, by draft position (0 = the first draft).",
                                labels=["model_name", "position"])
        for j, n in enumerate(s.spec_accepted):
            c.add_metric(name + [str(j)], n)
        yield c
        g = GaugeMetricFamily("kexa:spec_decode_acceptance_rate",
                              "Accepted / proposed draft tokens since start (0 before any draft).",
                              labels=["model_name"])
        g.add_metric(name, accepted / proposed if proposed else 0.0)
        yield g
