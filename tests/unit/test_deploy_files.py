"""Checks of the Prometheus alert rules and the Grafana dashboard shipped in deploy/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from service.notify.config import load_channels

from tests.support import missing

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "backup-monitor.json"

# Metric names exported at /metrics. Must match service/http/metrics.py (and a real scrape
# has them all: tests/integration/test_metrics.py).
EXPORTED = {
    "backup_job_status",
    "backup_job_tag",
    "backup_job_last_artifact_timestamp_seconds",
    "backup_job_last_artifact_size_bytes",
    "backup_job_artifacts",
    "backup_job_deadline_timestamp_seconds",
    "backup_scan_duration_seconds",
    "backup_scans_total",
    "backup_scan_errors_total",
    "backup_scans_failed_total",
    "backup_scanner_consecutive_failures",
    "backup_artifacts_seen_total",
    "backup_last_scan_timestamp_seconds",
    "backup_notification_deliveries_stored",
    "backup_monitor_build_info",
}

METRIC_RE = re.compile(r"backup_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Label matchers and label lists: `backup_job` there is a label, not a metric.
LABEL_LISTS = re.compile(
    r"\{[^}]*\}|\b(?:by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)"
)

REQUIRED_ALERTS = {
    "BackupJobCritical",
    "BackupJobLate",
    "BackupJobWarning",
    "BackupJobUnknown",
    "BackupScannerStalled",
    "BackupScannerNeverRan",
    "BackupScanErrors",
    "BackupScannerFailing",
    "BackupNotificationsFailed",
    "BackupNotificationsStuck",
}


def metric_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression, histogram series mapped to their base name."""
    names = set()
    for name in METRIC_RE.findall(LABEL_LISTS.sub(" ", expr)):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def load_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels nested in collapsed rows
    return panels


def test_metric_names_helper() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le) (rate(backup_scan_duration_seconds_bucket[5m])))"
        " + rate(backup_scans_total[5m]) + backup_scan_duration_seconds_count"
    )
    assert metric_names(expr) == {"backup_scan_duration_seconds", "backup_scans_total"}
    expr = (
        'max by (backup_job) (backup_job_artifacts{backup_job=~"a"}) and on (backup_job)'
        ' backup_job_tag{tag="x"}'
    )
    assert metric_names(expr) == {"backup_job_artifacts", "backup_job_tag"}


def test_alert_rules_structure() -> None:
    data = yaml.safe_load(ALERTS.read_text())
    assert isinstance(data, dict)
    assert data["groups"], "no rule groups"
    for group in data["groups"]:
        assert isinstance(group.get("name"), str) and group["name"]
        assert group.get("rules"), f"group {group['name']} has no rules"
        for rule in group["rules"]:
            assert isinstance(rule.get("alert"), str) and rule["alert"]
            assert isinstance(rule.get("expr"), str) and rule["expr"].strip()
            assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}
            assert rule.get("annotations", {}).get("summary"), rule["alert"]
    names = [rule["alert"] for rule in load_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS


def test_alert_rules_details() -> None:
    rules = {rule["alert"]: rule for rule in load_rules()}
    expected = {
        "BackupJobCritical": ("5m", "critical"),
        "BackupJobLate": ("5m", "critical"),
        "BackupJobWarning": ("30m", "warning"),
        "BackupJobUnknown": ("30m", None),
        "BackupScannerStalled": ("10m", "critical"),
        "BackupScannerNeverRan": ("30m", None),
    }
    for name, (duration, severity) in expected.items():
        assert rules[name].get("for") == duration, name
        if severity is not None:
            assert rules[name]["labels"]["severity"] == severity, name
    assert rules["BackupScanErrors"]["labels"]["severity"] == "warning"
    assert (
        "absent(max(backup_last_scan_timestamp_seconds))" in rules["BackupScannerNeverRan"]["expr"]
    )
    assert "max(increase(backup_scan_errors_total[1h]))" in rules["BackupScanErrors"]["expr"]
    for name in ("BackupJobCritical", "BackupJobLate", "BackupJobWarning", "BackupJobUnknown"):
        assert "{{ $labels.backup_job }}" in rules[name]["annotations"]["summary"], name
    assert "past its deadline" in rules["BackupJobLate"]["annotations"]["summary"]


def test_alert_rules_use_exported_metrics() -> None:
    used: set[str] = set()
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']} uses no backup_ metric"
        used |= names
    assert used <= EXPORTED, f"unknown metrics: {sorted(used - EXPORTED)}"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        missing("promtool is missing (Debian's prometheus package; `make tools` installs it)")
    return found


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )


def test_alert_rules_promtool() -> None:
    result = run_promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_aggregates_across_replicas() -> None:
    """Every replica exports the same series: a rule without the max fires once per replica."""
    for rule in load_rules():
        expr = " ".join(rule["expr"].split())
        if rule["alert"].startswith("BackupJob"):
            assert expr.startswith("max by (backup_job) ("), rule["alert"]
        else:
            assert re.match(r"(time\(\) - |absent\()?max\(", expr), rule["alert"]
        assert "job=" not in expr.replace("backup_job=", ""), rule["alert"]


def test_every_rule_is_unit_tested_firing_quiet_and_with_three_replicas() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    replicated: set[str] = set()
    for test in tests["tests"]:
        instances = {
            re.search(r'instance="([^"]+)"', series["series"]).group(1)  # type: ignore[union-attr]
            for series in test["input_series"]
        }
        for case in test["alert_rule_test"]:
            name = case["alertname"]
            if case.get("exp_alerts"):
                firing.add(name)
                # Three replicas in, exactly one alert (per job) out.
                if len(instances) >= 3:
                    replicated.add(name)
                    assert len(case["exp_alerts"]) == 1, (test["name"], case["eval_time"])
            else:
                quiet.add(name)
    rules = {rule["alert"] for rule in load_rules()}
    assert rules - firing == set(), "rules never seen firing"
    assert rules - quiet == set(), "rules never seen quiet"
    assert rules - replicated == set(), "rules never tested with three replicas"


def without_max(expr: str) -> str:
    """The rule as it was before replicas: `max by (backup_job) (X)` and `max(X)` become X."""
    return re.sub(r"max(?: by \(backup_job\))? ?\(", "(", expr)


def test_the_unit_tests_catch_an_alert_per_replica(tmp_path: Path) -> None:
    """Against rules that do not aggregate, the promtool tests fail: they would see 3 alerts."""
    data = yaml.safe_load(ALERTS.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            rule["expr"] = without_max(rule["expr"])
    (tmp_path / ALERTS.name).write_text(yaml.safe_dump(data))
    (tmp_path / ALERT_TESTS.name).write_text(ALERT_TESTS.read_text())
    assert run_promtool("check", "rules", tmp_path / ALERTS.name).returncode == 0
    result = run_promtool("test", "rules", tmp_path / ALERT_TESTS.name)
    assert result.returncode != 0
    for name in ("BackupJobCritical", "BackupJobLate", "BackupScannerFailing"):
        assert f"alertname: {name}," in result.stdout + result.stderr, name


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in all_panels(load_dashboard()) for t in panel["targets"]]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables given values, parsed by promtool as a rule."""
    values = {"$__rate_interval": "5m", "$backup_job": ".*", "$tag": "db|prod"}
    rules = []
    for index, expr in enumerate(dashboard_exprs()):
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query{index}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_take_the_max_across_replicas() -> None:
    for expr in dashboard_exprs():
        assert "max by (backup_job" in expr or "max(" in expr or "max by (le)" in expr, expr
        assert "job=" not in expr.replace("backup_job=", ""), expr
        assert "sum(" not in expr and "sum by (le)" not in expr, expr


def test_dashboard_panels() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    panels = all_panels(dashboard)
    assert panels
    for panel in panels:
        assert panel.get("title"), f"panel {panel.get('id')} has no title"
        assert panel.get("targets"), f"panel {panel['title']!r} has no targets"
        for t in panel["targets"]:
            assert t.get("expr"), f"panel {panel['title']!r} has an empty target"
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_dashboard_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("backup_job", "tag"):
        assert variables[name]["type"] == "query"
        assert "label_values(" in variables[name]["definition"]
    text = DASHBOARD.read_text()
    # Every data source reference goes through the variable, none is hard-coded.
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text)) - {"backup-monitor", "-- Grafana --"}
    assert uids == {"${DS_PROMETHEUS}"}


def test_dashboard_uses_exported_metrics() -> None:
    used: set[str] = set()
    for panel in all_panels(load_dashboard()):
        for t in panel["targets"]:
            used |= metric_names(t["expr"])
    assert used <= EXPORTED, f"unknown metrics: {sorted(used - EXPORTED)}"
    assert {"backup_job_status", "backup_scan_duration_seconds"} <= used


def test_channels_example_is_a_valid_channels_file() -> None:
    environ = {"SMTP_PASSWORD": "x", "HOOK_TOKEN": "y", "NTFY_TOPIC": "backups"}
    channels = load_channels(ROOT / "deploy" / "channels.example.yml", environ)
    assert sorted(channels.channels) == ["chat", "ops-hook", "ops-mail"]
    assert channels.defaults == ("ops-mail",)
