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
DASHBOARD = ROOT / "deploy" / "grafana" / "backup-monitor.json"

# Metric names exported at /metrics. Must match service/http/metrics.py.
EXPORTED = {
    "backup_job_status",
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
    "backup_notification_deliveries",
}

METRIC_RE = re.compile(r"backup_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

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
    for name in METRIC_RE.findall(expr):
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
    assert "absent(backup_last_scan_timestamp_seconds)" in rules["BackupScannerNeverRan"]["expr"]
    assert "increase(backup_scan_errors_total[1h])" in rules["BackupScanErrors"]["expr"]
    for name in ("BackupJobCritical", "BackupJobLate", "BackupJobWarning", "BackupJobUnknown"):
        assert "{{ $labels.job }}" in rules[name]["annotations"]["summary"], name
    assert "past its deadline" in rules["BackupJobLate"]["annotations"]["summary"]


def test_alert_rules_use_exported_metrics() -> None:
    used: set[str] = set()
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']} uses no backup_ metric"
        used |= names
    assert used <= EXPORTED, f"unknown metrics: {sorted(used - EXPORTED)}"


def test_alert_rules_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool is missing (Debian's prometheus package; `make test` installs it)")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
    for name in ("job", "tags"):
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
