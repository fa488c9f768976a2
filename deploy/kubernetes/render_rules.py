"""Write prometheusrule.yaml: deploy/prometheus/alerts.yml's groups as a PrometheusRule.

    python deploy/kubernetes/render_rules.py          # rewrite prometheusrule.yaml
    python deploy/kubernetes/render_rules.py --check  # exit 1 when it is out of date

The rules have one home, alerts.yml (promtool checks and tests it); this file only wraps them,
and tests/unit/test_kubernetes.py fails when the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parent / "prometheus" / "alerts.yml"
TARGET = HERE / "prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/kubernetes/render_rules.py: edit
# alerts.yml, then run `python deploy/kubernetes/render_rules.py`. Needs the Prometheus
# Operator's CRDs; a kube-prometheus-stack Prometheus selects rules by its release label: add
# `release: <its name>` to the labels below.
"""


class _Dumper(yaml.SafeDumper):
    """Block style for texts of several lines (the descriptions), so the file stays readable."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule resource holding `alerts`' groups, unchanged."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "backup-monitor",
            "labels": {"app.kubernetes.io/name": "backup-monitor"},
        },
        "spec": {"groups": alerts["groups"]},
    }


def render(alerts_text: str) -> str:
    document = prometheus_rule(yaml.safe_load(alerts_text))
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    text = render(ALERTS.read_text(encoding="utf-8"))
    if "--check" in argv:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
