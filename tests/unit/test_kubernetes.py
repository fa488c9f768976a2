"""The Kubernetes manifests of deploy/kubernetes/: rendered as kustomize would, validated
against the Kubernetes API schemas (kubernetes-validate: the schemas of each Kubernetes release,
bundled, strict: an unknown or misspelled field fails), and checked for what the service needs
(probes, a migration that cannot race, a hardened pod, files and secrets that match).

The ServiceMonitor and the PrometheusRule are the Prometheus Operator's custom resources, which
kubernetes-validate has no schema for: they are validated against the operator's CRD schemas
as cloudcoil-models-prometheus-operator ships them (pydantic models generated from the CRDs:
types, required fields, patterns), strictly (a field the model drops is a field the CRD does not
have). The PrometheusRule's groups must be deploy/prometheus/alerts.yml's.
"""

from __future__ import annotations

import copy
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring
from pydantic import BaseModel

from service.config.jobsfile import parse_declarations
from service.notify.config import parse_channels

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SECRET_EXAMPLE = KUSTOMIZE_DIR / "secret.example.yaml"
# The oldest Kubernetes release the manifests are meant for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRETS_MOUNT = "/run/secrets/backup-monitor"


def render(directory: Path = KUSTOMIZE_DIR) -> list[dict[str, Any]]:
    """What `kustomize build` makes of the directory: its `resources`, in order. Only
    `resources` is used (checked here), so this is all a kustomization does with it."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) == {"apiVersion", "kind", "resources"}, (
        "the test's renderer knows `resources` only: render the new field here too"
    )
    documents = []
    for name in kustomization["resources"]:
        path = directory / name
        assert path.is_file(), f"{name} is listed in kustomization.yaml but missing"
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render()


def one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        doc
        for doc in documents
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    return found


def validate(document: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(document, version, strict=True)


# --- the validator, against the Kubernetes schemas ------------------------------------------


def test_every_manifest_is_valid_against_the_kubernetes_schemas(rendered) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    for document in [*rendered, secret]:
        if document["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            validate(document, version)


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        pytest.param(("spec", "replicas"), "two", "is not of type 'integer'", id="type"),
        pytest.param(("spec", "template", "spec", "securityContxt"), {}, "Additional", id="typo"),
        pytest.param(
            ("spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"),
            "http",
            "'http' is not of type 'integer'",
            id="nested-type",
        ),
    ],
)
def test_the_validator_rejects_a_broken_deployment(rendered, path, value, fragment) -> None:
    broken = copy.deepcopy(one(rendered, "Deployment"))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        validate(broken, KUBERNETES_VERSIONS[-1])
    assert fragment in str(caught.value)


def test_kubectl_kustomize_renders_what_the_test_validates(rendered) -> None:
    # A cross-check where kubectl is installed (it is not a tool `make test` installs: the
    # validation above does not depend on it).
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize cross-check needs it")
    done = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    built = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert sorted(built, key=key) == sorted(rendered, key=key)


# --- the deployment: probes, migrations, hardening, files and secrets -----------------------


def test_the_deployment_runs_replicas_with_probes_on_the_health_endpoints(rendered) -> None:
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in server["env"]}
    (port,) = server["ports"]
    assert env["PORT"]["value"] == str(port["containerPort"])
    assert server["args"] == ["serve", "--host", "0.0.0.0"]
    for probe, path in (
        ("startupProbe", "/health/ready"),
        ("livenessProbe", "/health/live"),
        # README, /health/ready: a readiness probe that must keep pings flowing uses /live.
        ("readinessProbe", "/health/live"),
    ):
        assert server[probe]["httpGet"] == {"path": path, "port": port["name"]}, probe


def test_migrations_run_once_before_the_server_never_inside_it(rendered) -> None:
    spec = one(rendered, "Deployment")["spec"]["template"]["spec"]
    (migrate,) = spec["initContainers"]
    (server,) = spec["containers"]
    assert migrate["image"] == server["image"]
    assert migrate["args"] == ["db", "upgrade"]
    env = {item["name"]: item.get("value") for item in server["env"]}
    assert env["AUTO_MIGRATE"] == "false"
    migrate_env = {item["name"]: item.get("value") for item in migrate["env"]}
    assert migrate_env["DATABASE_URL_FILE"] == env["DATABASE_URL_FILE"]


def test_every_container_is_hardened_and_has_resources(rendered) -> None:
    spec = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["initContainers"] + spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert container["resources"]["requests"]["cpu"], container["name"]
        assert container["resources"]["requests"]["memory"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        assert "/tmp" in mounts, "a read-only root needs a writable /tmp"
        assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")


def test_mounts_files_and_secrets_match(rendered) -> None:
    spec = one(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    secret_keys = set(secret["stringData"])
    for container in spec["initContainers"] + spec["containers"]:
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        assert set(mounts) <= set(volumes), container["name"]
        for item in container["env"]:
            name, value = item["name"], item.get("value")
            if name.endswith("_FILE") and name not in ("JOBS_FILE", "CHANNELS_FILE"):
                # A secret setting read from the mounted Secret: the key must exist.
                directory, key = value.rsplit("/", 1)
                assert directory == mounts["secrets"] == SECRETS_MOUNT, name
                assert key in secret_keys, f"{name}: the Secret has no key {key}"
            if name in ("JOBS_FILE", "CHANNELS_FILE"):
                volume = "jobs" if name == "JOBS_FILE" else "channels"
                directory, key = value.rsplit("/", 1)
                assert directory == mounts[volume], name
                config_map = one(rendered, "ConfigMap", volumes[volume]["configMap"]["name"])
                assert key in config_map["data"], name
            assert "valueFrom" not in item, f"{name}: secrets are files, not variables"
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]


def test_the_config_maps_hold_files_the_service_accepts(rendered) -> None:
    jobs = yaml.safe_load(one(rendered, "ConfigMap", "backup-monitor-jobs")["data"]["jobs.yml"])
    channels_text = one(rendered, "ConfigMap", "backup-monitor-channels")["data"]["channels.yml"]
    channels = parse_channels(yaml.safe_load(channels_text), "channels.yml", environ={})
    declared = parse_declarations(jobs, "jobs.yml", [Path("/backups")], channels.channels)
    assert len(declared.jobs) >= 1
    # The commented channels are valid too, once uncommented, with their secrets set.
    uncommented = "\n".join(
        "channels:" if line == "channels: {}" else line.removeprefix("# ")
        for line in channels_text.splitlines()
    )
    environ = {"SMTP_PASSWORD": "x", "HOOK_TOKEN": "y"}
    assert sorted(parse_channels(yaml.safe_load(uncommented), "channels.yml", environ).channels)
    assert parse_channels(yaml.safe_load(uncommented), "c", environ).defaults == ("ops-mail",)


def test_the_disruption_budget_and_service_select_the_pods(rendered) -> None:
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    budget = one(rendered, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    service = one(rendered, "Service")["spec"]
    assert service["selector"].items() <= pod_labels.items()
    (server,) = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    (port,) = service["ports"]
    assert port["targetPort"] == server["ports"][0]["name"]


# --- the Prometheus Operator's resources ----------------------------------------------------

CRD_MODELS: dict[str, type[BaseModel]] = {
    "ServiceMonitor": monitoring.ServiceMonitor,
    "PrometheusRule": monitoring.PrometheusRule,
}


def validate_custom(document: dict[str, Any]) -> None:
    """Validate against the CRD's model; a field it does not know fails (the model would drop
    it silently: what it gives back must be the whole document)."""
    model = CRD_MODELS[document["kind"]].model_validate(document)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert back == document, f"{document['kind']}: fields the CRD does not define"


def test_the_custom_resources_are_valid_against_the_crd_schemas(rendered) -> None:
    custom = [doc for doc in rendered if doc["kind"] in CUSTOM_KINDS]
    assert sorted(doc["kind"] for doc in custom) == sorted(CUSTOM_KINDS)
    for document in custom:
        validate_custom(document)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        pytest.param("ServiceMonitor", ("spec", "endpoints", 0, "intervall"), "30s", id="typo"),
        pytest.param("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "30 s", id="pattern"),
        pytest.param("PrometheusRule", ("spec", "groups", 0, "rules", 0, "expr"), None, id="null"),
        pytest.param("PrometheusRule", ("spec", "groups", 0, "rulez"), [], id="rule-typo"),
    ],
)
def test_the_crd_check_rejects_a_broken_resource(rendered, kind, path, value) -> None:
    broken = copy.deepcopy(one(rendered, kind))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises((AssertionError, ValueError)):
        validate_custom(broken)


def test_the_service_monitor_scrapes_the_service_with_the_metrics_token(rendered) -> None:
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one(rendered, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert credentials["name"] == secret["metadata"]["name"]
    assert credentials["key"] in secret["stringData"]
    assert endpoint["authorization"]["type"] == "Bearer"


def test_the_prometheus_rule_holds_alerts_yml_groups(rendered) -> None:
    rule = one(rendered, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        "prometheusrule.yaml is out of date: python deploy/kubernetes/render_rules.py"
    )


def test_the_prometheus_rule_file_is_the_generators_output() -> None:
    generator = runpy.run_path(str(KUSTOMIZE_DIR / "render_rules.py"))
    expected = generator["render"](ALERTS.read_text(encoding="utf-8"))
    assert (KUSTOMIZE_DIR / "prometheusrule.yaml").read_text(encoding="utf-8") == expected


def test_the_readmes_overlay_renders_to_valid_resources(tmp_path: Path) -> None:
    # The README's Kubernetes commands as written: the overlay it writes, built by kustomize
    # (kubectl's, where installed) from a copy of deploy/, then validated as above.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: rendering the README's overlay needs it")
    section = (ROOT / "README.md").read_text().split("\n### Kubernetes\n", 1)[1]
    (block,) = re.findall(r"```sh\n(.*?)```", section.split("\n### ", 1)[0], flags=re.DOTALL)
    (overlay,) = re.findall(r"<<'EOF'\n(.*?)\nEOF\n", block, flags=re.DOTALL)
    assert "cp deploy/jobs.example.yml overlays/prod/jobs.yml" in block
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    prod = tmp_path / "overlays" / "prod"
    prod.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "jobs.example.yml", prod / "jobs.yml")
    (prod / "kustomization.yaml").write_text(overlay + "\n")
    done = subprocess.run(
        [kubectl, "kustomize", str(prod)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    documents = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    for document in documents:
        assert document["metadata"]["namespace"] == "backups"
        if document["kind"] in CUSTOM_KINDS:
            validate_custom(document)
        else:
            validate(document, KUBERNETES_VERSIONS[-1])
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    images = {c["image"] for c in deployment["spec"]["template"]["spec"]["initContainers"]}
    images |= {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example.com/backup-monitor:0.1.0"}
