"""docker-compose.yml keeps every secret out of itself and of the environment, publishes the
port on loopback by default; the Dockerfile's image carries OCI labels and a HEALTHCHECK that
follows PORT. (tests/container runs the image itself.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# Variable names that carry a secret when given a value (a *_FILE names a file instead).
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|DATABASE_URL|PING_KEY|_KEY$")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def default_of(text: str) -> str:
    """`${NAME:-default}` replaced by its default, as compose does with NAME unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def test_no_secret_is_given_in_clear() -> None:
    document = compose()
    declared = document["secrets"]
    for name, service in document["services"].items():
        environment: dict[str, str] = service.get("environment", {})
        mounted = set(service.get("secrets", []))
        for variable, value in environment.items():
            if variable in ("JOBS_FILE", "CHANNELS_FILE"):  # configuration, not secrets
                continue
            if variable.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert value == f"/run/secrets/{secret}", f"{name}: {variable}"
                assert secret in mounted, f"{name}: {variable} names a secret not mounted"
                continue
            assert not SECRET_NAME.search(variable), f"{name}: {variable} given in clear"
            assert "@" not in str(value), f"{name}: {variable} looks like credentials"
        for secret in mounted:
            assert declared[secret]["file"].startswith("./secrets/")
    # The secrets folder stays out of the image's build context.
    assert "secrets" in (ROOT / ".dockerignore").read_text().split()


def test_the_port_is_published_on_loopback_by_default() -> None:
    (published,) = compose()["services"]["backup-monitor"]["ports"]
    address, host_port, container_port = default_of(published).split(":")
    assert (address, host_port, container_port) == ("127.0.0.1", "8080", "8080")


def test_the_image_has_oci_labels_with_the_package_version() -> None:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', text))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels == {
        "org.opencontainers.image.title": project["name"],
        "org.opencontainers.image.description": project["description"],
        "org.opencontainers.image.version": project["version"],
        "org.opencontainers.image.licenses": project["license"],
    }


def test_the_healthcheck_asks_the_port_the_service_listens_on() -> None:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (healthcheck,) = re.findall(r"^HEALTHCHECK .*$", text, flags=re.MULTILINE)
    assert "os.environ['PORT']" in healthcheck
    assert "/health/live" in healthcheck
    assert re.search(r"^ENV .*PORT=8080", text, flags=re.MULTILINE | re.DOTALL)
