"""The Grafana dashboard and its provisioning are well formed, and every metric they and the alert
rules use is one that docs/METRICS.md documents (or that another exporter provides)."""

from __future__ import annotations

import re
from itertools import combinations

import yaml

from tests.deploy import promql
from tests.deploy.tools import DEPLOY

PROVISIONING = DEPLOY / "grafana" / "provisioning"
# Grafana 12.0, the version deploy/docker-compose.yml runs, writes schema 41; older ones are migrated on load.
SCHEMA_VERSION = 41


def test_the_dashboard_has_a_stable_uid_and_a_current_schema() -> None:
    dashboard = promql.dashboard()

    assert dashboard["uid"] == "modelserve", "links and provisioning find the dashboard by its uid"
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert "id" not in dashboard or dashboard["id"] is None, "an id is Grafana's database key, not ours"


def test_the_data_source_is_a_variable_of_type_prometheus() -> None:
    datasource = promql.variables()["datasource"]

    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"


def test_the_model_variable_lists_the_models_that_received_requests() -> None:
    model = promql.variables()["model"]

    assert model["type"] == "query"
    assert model["datasource"] == promql.DATASOURCE
    assert promql.model_variable_query() == "label_values(model_serving_requests_total, model)"
    assert model["multi"]
    assert model["includeAll"]
    assert model["allValue"] == ".*", "All must also show models that have not been called yet"


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in promql.dashboard()["panels"]]
    ids += [inner["id"] for panel in promql.dashboard()["panels"] for inner in panel.get("panels", [])]

    assert len(ids) == len(set(ids)), sorted(ids)
    assert all(isinstance(panel_id, int) for panel_id in ids)


def test_every_panel_queries_prometheus_through_the_datasource_variable() -> None:
    for panel in promql.panels():
        title = panel["title"]
        assert panel["datasource"] == promql.DATASOURCE, title
        assert panel["targets"], title
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: refIds {ref_ids}"
        for target in panel["targets"]:
            assert isinstance(target["expr"], str), title
            assert target["expr"].strip(), f"{title} {target['refId']}: empty expr"
            assert target.get("datasource", promql.DATASOURCE) == promql.DATASOURCE, title
    for annotation in promql.dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == promql.DATASOURCE, annotation["name"]


def test_panels_lie_on_the_grid_without_overlapping() -> None:
    boxes = []
    for panel in promql.dashboard()["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
        assert all(isinstance(grid[key], int) for key in "hwxy"), panel["title"]
        assert grid["h"] > 0, panel["title"]
        assert grid["w"] > 0, panel["title"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than Grafana's 24 columns"
        boxes.append((panel["title"], grid))
    for (first, a), (second, b) in combinations(boxes, 2):
        apart = (
            a["x"] + a["w"] <= b["x"]
            or b["x"] + b["w"] <= a["x"]
            or a["y"] + a["h"] <= b["y"]
            or b["y"] + b["h"] <= a["y"]
        )
        assert apart, f"{first!r} and {second!r} overlap"


def test_the_error_rate_panel_counts_the_codes_the_alert_pages_on() -> None:
    (alert,) = [rule for rule in promql.alert_rules() if rule["alert"] == "InferenceErrorRateHigh"]
    (codes,) = re.findall(r'code=~"([^"]+)"', alert["expr"])
    (panel,) = [panel for panel in promql.panels() if panel["title"] == "Server error rate"]

    assert f'code=~"{codes}"' in panel["targets"][0]["expr"]


def test_every_metric_of_the_dashboard_and_the_rules_is_documented() -> None:
    documented = promql.documented_metrics()
    assert len(documented) > 10, "docs/METRICS.md's tables were not found"
    for query in promql.dashboard_queries() + promql.rule_queries():
        names = promql.metric_names(query.expr)
        assert names, f"{query.where}: no metric found in {query.expr!r}"
        for name in names:
            if not promql.EXTERNAL.match(name):
                assert promql.is_documented(name, documented), f"{query.where}: {name} is not in docs/METRICS.md"


def test_every_documented_metric_is_on_the_dashboard() -> None:
    charted = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for query in promql.dashboard_queries()
        for name in promql.metric_names(query.expr)
    }

    assert promql.documented_metrics() - charted == set()


def test_the_metric_finder_sees_through_functions_matchers_and_offsets() -> None:
    expr = 'sum by (model, le) (rate(a_bucket{code=~"5..|b"}[$__rate_interval] offset 1w)) / on (x) c and bool d'

    assert promql.metric_names(expr) == {"a_bucket", "c", "d"}


def test_the_data_source_is_provisioned_as_prometheus() -> None:
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]

    assert source["type"] == "prometheus"
    assert source["url"].startswith("http")
    assert source["isDefault"], "the datasource variable starts on the default data source"


def test_the_dashboards_are_provisioned_from_files() -> None:
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "modelserve.yml").read_text())["providers"]

    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert not provider["allowUiUpdates"], "the JSON file in the repository is the dashboard"
