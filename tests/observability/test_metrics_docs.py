"""docs/METRICS.md documents every metric the server and the replication service register, with each of its labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from modelserve.db import open_engine
from modelserve.observability.gpu import GPU_METRICS
from modelserve.observability.metrics import Metrics
from modelserve.regions.jobs import JobStore, migrate
from modelserve.regions.metrics import ReplicationMetrics
from modelserve.regions.probes import ProbeMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "METRICS.md"


def _documented() -> dict[str, set[str]]:
    """Each table row's metric name and the labels its row names."""
    rows: dict[str, set[str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and (name := re.fullmatch(r"`(\w+)`", cells[0])):
            rows[name.group(1)] = set(re.findall(r"`(\w+)`", cells[2]))
    return rows


# prometheus-client's own process and interpreter metrics: documented by it, listed by name in METRICS.md.
STANDARD = ("process_", "python_")


def _ours(registry: CollectorRegistry) -> list[Metric]:
    return [family for family in registry.collect() if not family.name.startswith(STANDARD)]


def test_every_registered_metric_is_documented_with_its_labels() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    documented = _documented()

    families = _ours(registry)
    assert len(families) >= 12
    for family in families:
        exposed = f"{family.name}_total" if family.type == "counter" else family.name
        assert exposed in documented, f"{exposed} is registered but missing from docs/METRICS.md"
        labels = {label for sample in family.samples for label in sample.labels if label not in ("le",)}
        # Labelled metrics have no samples until first used; their label names come from the collector.
        collector = registry._names_to_collectors[family.name]
        labels |= set(collector._labelnames)
        assert labels == documented[exposed], f"{exposed}: labels {labels} documented as {documented[exposed]}"


def test_gpu_metrics_are_documented_whether_or_not_this_host_has_a_gpu() -> None:
    documented = _documented()

    for name in GPU_METRICS:
        assert documented.get(name) == {"gpu"}, f"{name} missing from docs/METRICS.md or documented without 'gpu'"


def _exposed(registry: CollectorRegistry) -> set[str]:
    return {f"{f.name}_total" if f.type == "counter" else f.name for f in _ours(registry)}


def test_the_document_lists_no_metric_that_does_not_exist(tmp_path: Path) -> None:
    """What the document lists is what a model server exports (its probes' metrics included, which it
    registers when PROBE_MODEL is set) and what the replication service does."""
    server = CollectorRegistry()
    Metrics(server)
    ProbeMetrics(server)
    service = CollectorRegistry()
    engine = open_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    ReplicationMetrics(service, JobStore(engine))

    assert set(_documented()) == _exposed(server) | _exposed(service) | set(GPU_METRICS)


def test_the_process_metrics_the_document_promises_are_exported() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    names = {sample.name for family in registry.collect() for sample in family.samples}
    text = DOC.read_text()

    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "python_info"):
        assert name in names, f"{name} is not exported"
        assert f"`{name}`" in text, f"{name} is exported but docs/METRICS.md does not name it"
