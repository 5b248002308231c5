"""deploy/monitoring: the Prometheus alert rules load (`promtool check rules`) and fire as their
unit tests say, the scrape job is a valid Prometheus configuration, and the Grafana dashboard is
JSON whose every query parses and reads only metrics the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
ALERT_TESTS = MONITORING / "alerts.test.yaml"
SCRAPE = MONITORING / "scrape-config.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

# What the services export (contacts_shared.web, .kafka, .dead_letters, .faults, .metrics;
# import-svc's rows, segment-svc's evaluation), and Prometheus' own `up`.
KNOWN_METRICS = {
    "up",
    "http_requests_total",
    "http_request_duration_seconds",
    "contacts_dead_lettered_records_total",
    "contacts_dead_letters_replayed_total",
    "contacts_waiting_on_outage",
    "contacts_consumer_lag",
    "contacts_outbox_backlog",
    "contacts_outbox_oldest_age_seconds",
    "contacts_import_rows_total",
    "contacts_segment_evaluation_seconds",
}
HISTOGRAMS = {"http_request_duration_seconds", "contacts_segment_evaluation_seconds"}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail(
            "promtool is not on PATH: `make setup` installs it (Debian's package prometheus; "
            "as root: apt-get install --no-install-recommends prometheus)",
            pytrace=False,
        )
    return subprocess.run(
        [tool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def metrics_of(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a histogram's _bucket, _sum and _count as
    the histogram)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges
    expr = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)\s*(\()?", expr):
        word, call = match.groups()
        if call or word in PROMQL_WORDS:
            continue
        base = re.sub(r"_(?:bucket|sum|count)$", "", word)
        names.add(base if base in HISTOGRAMS else word)
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL the dashboard runs: its panels' targets (rows' panels too) and its
    variables' queries (of `label_values(<selector>, <label>)`, the selector)."""
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels += panel.get("panels", [])
        yield from (t["expr"] for t in panel.get("targets", []))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            values_of = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            yield values_of.group(1) if values_of else query


def test_alert_rules_load() -> None:
    done = promtool("check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", ALERT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in alert_rules()}
    assert len(alerts) >= 5 and alerts <= fired, f"never fired in a test: {alerts - fired}"


def test_the_scrape_job_is_a_valid_prometheus_configuration(tmp_path: Path) -> None:
    """promtool checks the job with its relabelling and the rules it names; the pod discovery
    becomes a static target, as Debian's Prometheus is built without Kubernetes discovery."""
    (job,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    assert job["job_name"] == "contact-platform"
    labels = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"app", "namespace", "pod"} <= labels, "alerts.yaml groups by these target labels"
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:8101"]}]
    config = {"rule_files": [str(ALERTS)], "scrape_configs": [job]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = promtool("check", "config", tmp_path / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_queries_only_metrics_the_services_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = list(dashboard_queries(dashboard))
    used = set().union(*map(metrics_of, queries))
    alerting = set().union(*(metrics_of(rule["expr"]) for rule in alert_rules()))
    assert len(queries) >= 10 and used, "the dashboard has (almost) no queries"
    assert used <= KNOWN_METRICS, f"unknown metrics in the dashboard: {used - KNOWN_METRICS}"
    assert alerting <= KNOWN_METRICS, f"unknown metrics in alerts.yaml: {alerting - KNOWN_METRICS}"


def test_the_known_metrics_are_exported() -> None:
    sources = "\n".join(
        path.read_text()
        for pattern in ("shared/src/**/*.py", "services/*/src/**/*.py")
        for path in ROOT.glob(pattern)
    )
    # A counter may be registered without its `_total`, which prometheus_client adds.
    missing = {
        m
        for m in KNOWN_METRICS - {"up"}
        if f'"{m}"' not in sources and f'"{m.removesuffix("_total")}"' not in sources
    }
    assert not missing, f"no service registers {missing}"


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Each panel's query, its Grafana variables given values, as a recording rule that
    promtool parses."""
    dashboard = json.loads(DASHBOARD.read_text())
    rules = []
    for index, query in enumerate(dashboard_queries(dashboard)):
        query = query.replace("$__rate_interval", "5m").replace("$service", ".*")
        rules.append({"record": f"dashboard:query_{index}", "expr": query})
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    done = promtool("check", "rules", tmp_path / "queries.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_reads_its_data_source_from_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert dashboard["uid"] and panels
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)


def test_metrics_of_reads_names_not_functions_labels_or_ranges() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (service, le) (rate(http_request_duration_seconds_bucket"
        '{service=~"$service", route!~".*/progress"}[$__rate_interval]))) / on (service) '
        "group_left sum without (pod) (up) > bool 1e3 offset 5m"
    )
    assert metrics_of(expr) == {"http_request_duration_seconds", "up"}
