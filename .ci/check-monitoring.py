#!/usr/bin/env python3
"""Checks the monitoring files against the metrics the binary exposes.

- deploy/alerts.yml and the PrometheusRule in k8s/base/monitoring hold the same
  groups, rule for rule;
- every rule has a unique name, a severity, a summary, and an expression that
  parses as PromQL;
- every PromQL expression (rules and the Grafana dashboard) names only metrics
  of the list below, with their own labels and known label values;
- the dashboard shows every metric of the list, and reads the provisioned
  Prometheus data source;
- Prometheus scrapes the five services' admin port and loads alerts.yml;
- the OpenTelemetry collector's pipelines name only components it defines.

Exits 1 and names each problem. Needs PyYAML and promql-parser.

usage: check-monitoring.py (from the repository root)
"""

import json
import re
import sys
from pathlib import Path

import promql_parser
import yaml

SERVICES = ["population", "inventory", "printing", "ikd", "gateway"]

# name -> (type, labels). Every series also carries the process's `service`.
METRICS = {
    "adminduk_rpc_server_requests_total": ("counter", {"rpc_service", "rpc_method", "code"}),
    "adminduk_rpc_server_duration_seconds": ("histogram", {"rpc_service", "rpc_method", "code"}),
    "adminduk_build_info": ("gauge", {"version"}),
    "adminduk_tls_certificate_expiry_timestamp_seconds": ("gauge", {"certificate"}),
    "adminduk_ready": ("gauge", set()),
    "adminduk_inventory_quota_remaining": ("gauge", {"service_point", "date"}),
    "adminduk_inventory_grants_total": ("counter", {"service_point"}),
    "adminduk_inventory_refusals_total": ("counter", {"reason"}),
    "adminduk_inventory_expiries_total": ("counter", set()),
    "adminduk_inventory_group_commit_batch_size": ("histogram", set()),
    "adminduk_inventory_group_commit_duration_seconds": ("histogram", set()),
    "adminduk_printing_jobs": ("gauge", {"state"}),
    "adminduk_printing_backlog": ("gauge", set()),
    "adminduk_ikd_activations_total": ("counter", {"stage"}),
    "adminduk_gateway_ikd_deflections_total": ("counter", set()),
    "adminduk_gateway_broker_refusals_total": ("counter", set()),
    "adminduk_gateway_broker_flags_total": ("counter", set()),
    "adminduk_gateway_rate_limit_refusals_total": ("counter", {"principal_kind"}),
    "adminduk_gateway_audit_rows_total": ("counter", {"outcome"}),
    "adminduk_gateway_audit_chain_ok": ("gauge", set()),
    "adminduk_gateway_audit_chain_checked_timestamp_seconds": ("gauge", set()),
}
# Labels Prometheus adds to every scraped series (compose and the Prometheus Operator).
TARGET_LABELS = {"service", "job", "instance", "namespace", "pod", "container", "endpoint"}
VALUES = {
    "service": set(SERVICES),
    "certificate": {"server", "upstream_client"},
    "stage": {"started", "completed", "revoked"},
    "principal_kind": {"resident", "office", "agency", "admin", "anonymous"},
    "outcome": {"written", "dropped"},
}
SEVERITIES = {"critical", "warning", "info"}

problems: list[str] = []


def problem(text: str) -> None:
    problems.append(text)


def series_labels(name: str) -> set[str] | None:
    """The labels a series name may carry, or None if it is no series of ours."""
    if name == "up":
        return set(TARGET_LABELS)
    for base, (kind, labels) in METRICS.items():
        if kind == "histogram":
            if name == f"{base}_bucket":
                return labels | TARGET_LABELS | {"le"}
            if name in (f"{base}_sum", f"{base}_count"):
                return labels | TARGET_LABELS
        elif name == base:
            return labels | TARGET_LABELS
    return None


def metric_of(name: str) -> str | None:
    for base in METRICS:
        if name == base or name in (f"{base}_bucket", f"{base}_sum", f"{base}_count"):
            return base
    return None


def check_expr(where: str, expr: str, used: set[str]) -> None:
    # Grafana's variables stand for a range or a value; give the parser something of that shape.
    text = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    text = re.sub(r"\$\{?[a-z_]+\}?", "placeholder", text)
    try:
        ast = promql_parser.parse(text)
    except ValueError as err:
        problem(f"{where}: PromQL does not parse: {err}: {expr.strip()}")
        return
    allowed: set[str] = {"le"} | TARGET_LABELS
    selectors = []
    aggregations = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            aggregations.append(list(node.modifier.labels))
        return True

    promql_parser.walk(ast, visit)
    for selector in selectors:
        name = selector.name
        labels = series_labels(name) if name else None
        if labels is None:
            problem(f"{where}: {name!r} is not a metric the binary exposes")
            continue
        if metric_of(name):
            used.add(metric_of(name))
        allowed |= labels
        for matcher in selector.matchers.matchers:
            if matcher.name not in labels:
                problem(f"{where}: {name} has no label {matcher.name!r}")
                continue
            known = VALUES.get(matcher.name)
            if known is None or "placeholder" in matcher.value:
                continue
            if re.fullmatch(r"[A-Za-z0-9_|-]*", matcher.value):
                for value in filter(None, matcher.value.split("|")):
                    if value not in known:
                        problem(f"{where}: {matcher.name}={value!r} is not one of {sorted(known)}")
    for labels in aggregations:
        for label in labels:
            if label not in allowed:
                problem(f"{where}: grouping by {label!r}, which none of its metrics has")


def load_yaml(path: Path):
    with path.open() as file:
        return yaml.safe_load(file)


def check_rules(used: set[str]) -> None:
    alerts = load_yaml(Path("deploy/alerts.yml"))
    rule = load_yaml(Path("k8s/base/monitoring/prometheusrule.yaml"))
    if rule.get("kind") != "PrometheusRule":
        problem("k8s/base/monitoring/prometheusrule.yaml: not a PrometheusRule")
    elif rule["spec"]["groups"] != alerts["groups"]:
        problem("deploy/alerts.yml and k8s/base/monitoring/prometheusrule.yaml differ: keep their groups the same")
    names = set()
    for group in alerts["groups"]:
        for r in group["rules"]:
            name = r.get("alert") or r.get("record")
            where = f"deploy/alerts.yml: {group['name']}: {name}"
            if not name:
                problem(f"deploy/alerts.yml: {group['name']}: a rule without a name")
                continue
            if name in names:
                problem(f"{where}: the name is used twice")
            names.add(name)
            if "alert" in r:
                if r.get("labels", {}).get("severity") not in SEVERITIES:
                    problem(f"{where}: severity must be one of {sorted(SEVERITIES)}")
                if not r.get("annotations", {}).get("summary"):
                    problem(f"{where}: no summary")
                if "for" in r:
                    try:
                        promql_parser.parse_duration(str(r["for"]))
                    except ValueError as err:
                        problem(f"{where}: for: {err}")
            check_expr(where, str(r.get("expr", "")), used)


def check_dashboard() -> None:
    path = Path("deploy/grafana/dashboards/adminduk.json")
    dash = json.loads(path.read_text())
    used: set[str] = set()
    ids = set()
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    for panel in dash["panels"]:
        if panel["id"] in ids:
            problem(f"{path}: panel id {panel['id']} used twice")
        ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        where = f"{path}: panel {panel['title']!r}"
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"{where}: reads a data source other than ${{datasource}}")
        if not panel.get("targets"):
            problem(f"{where}: no query")
        for target in panel.get("targets", []):
            for var in re.findall(r"\$\{?([a-z_]+)\}?", target["expr"]):
                if not var.startswith("__") and var not in variables:
                    problem(f"{where}: ${var} is not a dashboard variable")
            check_expr(where, target["expr"], used)
    for name in sorted(set(METRICS) - used):
        problem(f"{path}: no panel shows {name}")
    sources = load_yaml(Path("deploy/grafana/provisioning/datasources/datasources.yaml"))
    if not any(s.get("uid") == "prometheus" and s.get("type") == "prometheus" for s in sources["datasources"]):
        problem("deploy/grafana/provisioning: no Prometheus data source with uid prometheus (the dashboard's default)")
    current = next((v for v in dash["templating"]["list"] if v["name"] == "datasource"), {})
    if current.get("current", {}).get("value") != "prometheus":
        problem(f"{path}: the datasource variable does not default to the provisioned Prometheus")


def check_prometheus() -> None:
    config = load_yaml(Path("deploy/prometheus.yml"))
    if "/etc/prometheus/alerts.yml" not in config.get("rule_files", []):
        problem("deploy/prometheus.yml: does not load /etc/prometheus/alerts.yml")
    targets = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets.update(static["targets"])
    for service in SERVICES:
        if f"{service}:9464" not in targets:
            problem(f"deploy/prometheus.yml: {service}:9464 is not scraped")


def check_collector() -> None:
    config = load_yaml(Path("deploy/otel-collector.yaml"))
    service = config["service"]
    for kind in ("receivers", "processors", "exporters"):
        defined = set(config.get(kind) or {})
        for name, pipeline in service["pipelines"].items():
            for component in pipeline.get(kind, []):
                if component not in defined:
                    problem(f"deploy/otel-collector.yaml: pipeline {name} uses {kind[:-1]} {component!r}, which is not defined")
    for extension in service.get("extensions", []):
        if extension not in (config.get("extensions") or {}):
            problem(f"deploy/otel-collector.yaml: extension {extension!r} is not defined")


def main() -> int:
    used: set[str] = set()
    check_rules(used)
    check_dashboard()
    check_prometheus()
    check_collector()
    for line in problems:
        print(f"FAIL {line}")
    if problems:
        return 1
    print(f"alerts, dashboard, Prometheus and collector configuration agree with the {len(METRICS)} metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
