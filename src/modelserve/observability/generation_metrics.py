"""Token-level figures of generative models, each beside the vLLM metric it stands for (docs/METRICS.md),
so a vLLM dashboard ports by renaming its series."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from modelserve.models.records import ModelVersion

# vLLM's own buckets for time to first token and the request latencies, trimmed to what a CPU reaches.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)


class GenerationMetrics:
    """Collectors of generations; the OpenAI routes report each finished generation once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def histogram(name: str, text: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, text, ["model"], buckets=buckets, registry=registry)

        self.ttft = histogram(
            "model_serving_generation_time_to_first_token_seconds",
            "Time from a generation's arrival to its first token (vllm:time_to_first_token_seconds).",
            TTFT_BUCKETS,
        )
        self.itl = histogram(
            "model_serving_generation_inter_token_latency_seconds",
            "Time between two tokens of a generation (vllm:inter_token_latency_seconds).",
            ITL_BUCKETS,
        )
        self.e2e = histogram(
            "model_serving_generation_e2e_latency_seconds",
            "Time from a generation's arrival to its last token (vllm:e2e_request_latency_seconds).",
            REQUEST_BUCKETS,
        )
        self.queue = histogram(
            "model_serving_generation_queue_time_seconds",
            "Time a generation waited before joining the running batch (vllm:request_queue_time_seconds).",
            REQUEST_BUCKETS,
        )
        self.prompt_tokens = Counter(
            "model_serving_generation_prompt_tokens",
            "Prompt tokens prefilled (vllm:prompt_tokens_total).",
            ["model"],
            registry=registry,
        )
        self.generation_tokens = Counter(
            "model_serving_generation_tokens",
            "Tokens generated (vllm:generation_tokens_total).",
            ["model"],
            registry=registry,
        )
        self.finished = Counter(
            "model_serving_generation_finished",
            "Generations ended, by reason: stop, length, abort (caller gone, model unloaded), error "
            "(vllm:request_success_total's finished_reason).",
            ["model", "reason"],
            registry=registry,
        )
        self.running = Gauge(
            "model_serving_generation_requests_running",
            "Generations in the running batch (vllm:num_requests_running).",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.waiting = Gauge(
            "model_serving_generation_requests_waiting",
            "Generations waiting to join the running batch (vllm:num_requests_waiting).",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.kv_cache = Gauge(
            "model_serving_generation_kv_cache_usage_ratio",
            "Tokens held in the running generations' key/value caches over the most the running batch may "
            "hold, max_num_seqs times max_model_len (vllm:kv_cache_usage_perc).",
            ["model"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._shown: set[str] = set()

    def observe(self, model: str, sequence: Any, completion_tokens: int) -> None:
        """One ended generation: its timings (from its ``Sequence``), its tokens, why it ended."""
        self.prompt_tokens.labels(model).inc(len(sequence.prompt_ids))
        self.generation_tokens.labels(model).inc(completion_tokens)
        self.finished.labels(model, sequence.finish_reason or "abort").inc()
        if sequence.scheduled is not None:
            self.queue.labels(model).observe(sequence.scheduled - sequence.arrived)
        if sequence.first_token is not None and sequence.last_token is not None:
            self.ttft.labels(model).observe(sequence.first_token - sequence.arrived)
            self.e2e.labels(model).observe(sequence.last_token - sequence.arrived)
            for gap in sequence.gaps:
                self.itl.labels(model).observe(gap)

    def refresh(self, ready: list[ModelVersion]) -> None:
        """Set running, waiting and cache usage from each generative model's engines (its versions added
        up); models gone since read 0."""
        engines: dict[str, list[int]] = {}
        for record in ready:
            if (counts := getattr(record.runtime, "generation_counts", None)) is not None:
                total = engines.setdefault(record.name, [0, 0, 0, 0])
                for index, value in enumerate(counts()):
                    total[index] += value
        for model, (running, waiting, held, capacity) in engines.items():
            self.running.labels(model).set(running)
            self.waiting.labels(model).set(waiting)
            self.kv_cache.labels(model).set(held / capacity if capacity else 0.0)
        for model in self._shown - engines.keys():
            for gauge in (self.running, self.waiting, self.kv_cache):
                gauge.labels(model).set(0)
        self._shown = set(engines)
