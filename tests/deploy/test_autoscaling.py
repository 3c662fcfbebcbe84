"""The autoscaler's per-pod metrics and the prometheus-adapter rules that serve them.

The rules (deploy/prometheus-adapter/values.yaml) match the adapter's configuration schema, serve
exactly the metrics the HorizontalPodAutoscalers read, read only documented series, and, filled in as the
adapter fills them for a request about two pods, parse and answer one value per pod in promtool; the
targets keep to the settings and alerts they are derived from.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy import adapter, promql, promtool
from tests.deploy.manifests import one, render

NAMESPACE = 'namespace="model-serving"'
# What the adapter fills in when the autoscaler asks about the pods a and b of model-serving.
FIELDS = {"LabelMatchers": f'{NAMESPACE},pod=~"model-serving-a|model-serving-b"', "GroupBy": "pod"}


def _pods_metrics(name: str) -> dict[str, dict[str, Any]]:
    metrics = one(render(name), "HorizontalPodAutoscaler")["spec"]["metrics"]
    return {m["pods"]["metric"]["name"]: m["pods"] for m in metrics if m["type"] == "Pods"}


def _quantity(value: str) -> float:
    """A Kubernetes quantity as the autoscaler compares it: "10" or, in thousandths, "20m"."""
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_the_values_and_the_config_the_chart_writes_match_their_schemas() -> None:
    jsonschema.validate(adapter.values(), adapter.VALUES)
    jsonschema.validate(adapter.config(), adapter.CONFIG)
    assert adapter.rules(), "no rule"


def test_the_schemas_refuse_what_the_adapter_and_the_chart_would() -> None:
    config = adapter.config()
    misspelt = copy.deepcopy(config)
    misspelt["rules"][0]["metricQuery"] = misspelt["rules"][0].pop("metricsQuery")
    with pytest.raises(jsonschema.ValidationError, match="metricQuery"):
        jsonschema.validate(misspelt, adapter.CONFIG)
    both = copy.deepcopy(config)
    both["rules"][0]["seriesFilters"] = [{"is": "a", "isNot": "b"}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(both, adapter.CONFIG)
    values = adapter.values()
    values["rules"]["customs"] = values["rules"].pop("custom")
    with pytest.raises(jsonschema.ValidationError, match="customs"):
        jsonschema.validate(values, adapter.VALUES)


@pytest.mark.parametrize("name", ["base", "prod"])
def test_the_adapter_serves_exactly_the_pod_metrics_the_autoscaler_reads(name: str) -> None:
    served = [rule["name"]["as"] for rule in adapter.rules()]
    assert len(served) == len(set(served)), f"two rules publish one name: {served}"
    assert set(served) == set(_pods_metrics(name))


def test_each_rule_maps_the_scrape_labels_to_the_pod_and_its_namespace() -> None:
    for rule in adapter.rules():
        series = adapter.series_name(rule)
        assert rule["seriesQuery"] == f'{series}{{namespace!="",pod!=""}}', "series without a pod name no pod"
        assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}
        assert re.fullmatch(rule["name"]["matches"], series), "matches filters the series the query found"
        assert "by (<<.GroupBy>>)" in rule["metricsQuery"], "one value per pod asked about"


def test_every_metric_the_rules_read_is_documented() -> None:
    documented = promql.documented_metrics()
    for rule in adapter.rules():
        query = adapter.fill(rule["metricsQuery"], {**FIELDS, "Series": adapter.series_name(rule)})
        names = promql.metric_names(query) | {adapter.series_name(rule)}
        for metric in names:
            assert promql.is_documented(metric, documented), f"{rule['name']['as']}: {metric} is not in docs/METRICS.md"


# Two models on pod a, one on pod b, for 2 minutes at the scrape interval; the same pod name in another
# namespace and a pod not asked about must not count.
SERIES = {
    'model_serving_queue_depth{namespace="model-serving",pod="model-serving-a",model="m1",version="1"}': "2x8",
    'model_serving_queue_depth{namespace="model-serving",pod="model-serving-a",model="m2",version="1"}': "3x8",
    'model_serving_queue_depth{namespace="model-serving",pod="model-serving-b",model="m1",version="1"}': "1x8",
    'model_serving_queue_depth{namespace="other",pod="model-serving-a",model="m1",version="1"}': "50x8",
    'model_serving_queue_depth{namespace="model-serving",pod="model-serving-c",model="m1",version="1"}': "50x8",
    'model_serving_requests_in_flight{namespace="model-serving",pod="model-serving-a",model="m1",version="1"}': "3x8",
    'model_serving_requests_in_flight{namespace="model-serving",pod="model-serving-a",model="m2",version="1"}': "4x8",
    'model_serving_requests_in_flight{namespace="model-serving",pod="model-serving-b",model="m1",version="1"}': "1x8",
    'model_serving_requests_in_flight{namespace="other",pod="model-serving-b",model="m1",version="1"}': "90x8",
    # Pod a: 40 requests every 15 s that waited 1 s in all, m1's 10 ms each and m2's 40 ms: 25 ms on average.
    'model_serving_queue_duration_seconds_sum{namespace="model-serving",pod="model-serving-a",model="m1"}': "0+0.2x8",
    'model_serving_queue_duration_seconds_count{namespace="model-serving",pod="model-serving-a",model="m1"}': "0+20x8",
    'model_serving_queue_duration_seconds_sum{namespace="model-serving",pod="model-serving-a",model="m2"}': "0+0.8x8",
    'model_serving_queue_duration_seconds_count{namespace="model-serving",pod="model-serving-a",model="m2"}': "0+20x8",
    # Pod b answered nothing in the window: 0 s, not NaN.
    'model_serving_queue_duration_seconds_sum{namespace="model-serving",pod="model-serving-b",model="m1"}': "3x8",
    'model_serving_queue_duration_seconds_count{namespace="model-serving",pod="model-serving-b",model="m1"}': "100x8",
    'model_serving_queue_duration_seconds_sum{namespace="other",pod="model-serving-b",model="m1"}': "0+9x8",
    'model_serving_queue_duration_seconds_count{namespace="other",pod="model-serving-b",model="m1"}': "0+1x8",
}
EXPECTED = {
    "model_serving_queue_depth": {"model-serving-a": 5.0, "model-serving-b": 1.0},
    "model_serving_requests_in_flight": {"model-serving-a": 7.0, "model-serving-b": 1.0},
    "model_serving_queue_duration_seconds_mean": {"model-serving-a": 0.025, "model-serving-b": 0.0},
}


def test_each_rule_answers_one_value_per_pod_asked_about(tmp_path: Path) -> None:
    cases = []
    for rule in adapter.rules():
        query = adapter.fill(rule["metricsQuery"], {**FIELDS, "Series": adapter.series_name(rule)})
        expected = EXPECTED[rule["name"]["as"]]
        samples = [promtool.sample(f'{{pod="{pod}"}}', value) for pod, value in expected.items()]
        cases.append(promtool.case(query, "2m", samples))
    assert len(cases) == len(EXPECTED)

    promtool.evaluate(tmp_path, SERIES, cases)


def test_promtool_refuses_a_query_that_does_not_parse(tmp_path: Path) -> None:
    """The check above is only worth something if a broken query fails it."""
    with pytest.raises(AssertionError, match="promtool test rules failed"):
        promtool.evaluate(tmp_path, SERIES, [promtool.case("sum(model_serving_queue_depth) by (", "2m", [])])


@pytest.mark.parametrize("name", ["base", "prod"])
def test_the_targets_follow_the_batch_size_and_the_latency_alert(name: str) -> None:
    metrics = _pods_metrics(name)
    for pods in metrics.values():
        assert pods["target"]["type"] == "AverageValue", "a per-pod average, not a total"
    batch = one(render(name), "ConfigMap")["data"]["MAX_BATCH_SIZE"]
    assert _quantity(metrics["model_serving_requests_in_flight"]["target"]["averageValue"]) == int(batch)
    [latency] = [rule for rule in promql.alert_rules() if rule["alert"] == "HighLatency"]
    p99 = float(re.findall(r">\s*([\d.]+)\s*$", latency["expr"].strip())[0])
    assert 0 < _quantity(metrics["model_serving_queue_duration_seconds_mean"]["target"]["averageValue"]) < p99 / 2
