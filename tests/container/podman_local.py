"""Podman as this machine can run it, and the local base image the project's image is built on.

No container daemon and no image registry are reachable here; Debian's podman runs as root,
daemonless, on a storage of its own (the `overlay` driver where the kernel mounts an overlay
here, else `vfs`, which copies every layer: a build takes minutes more), builds with chroot
isolation and runs with runc, cgroupfs, the host's network and explicit ulimits.
`environment()` gives the variables that make a plain `podman ...` command do all that, so the
commands the README shows run as written (docker -> podman).

The base image (Debian bookworm from `debootstrap --variant=minbase`, plus Debian's python3
and pip, trusting the host's certificate authorities) takes about a minute to make. It lives in
that storage, outside the repository, under a tag derived from its recipe: made once, found by
every later run, remade only when the recipe or the host's extra certificates change.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What the project's Dockerfile expects of its base: python3 (3.11 satisfies the project) and pip
# (it installs uv with pip); ca-certificates for the registries.
PACKAGES = ("python3", "python3-pip", "ca-certificates")
# Where update-ca-certificates finds the certificate authorities added to the host's trust store
# (a proxy's own, here): the base must trust them too to reach the package registries.
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
# Only in this local base, never in the project's Dockerfile: pip and uv use the system's trust
# store (which holds the host's extra authorities), and pip may install into the system Python
# (Debian marks it externally managed; the official python image does not).
BASE_ENV = {
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "UV_NATIVE_TLS": "1",
    "PIP_BREAK_SYSTEM_PACKAGES": "1",
    "LANG": "C.UTF-8",
}
BASE_NAME = "localhost/backup-monitor-test-base"


def cache_dir() -> Path:
    """Where the storage and its configuration live (kept between runs; `rm -rf` it to start
    over): BACKUP_MONITOR_CONTAINER_CACHE, else /var/cache/backup-monitor-tests for root."""
    configured = os.environ.get("BACKUP_MONITOR_CONTAINER_CACHE")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/backup-monitor-tests")
    return Path.home() / ".cache" / "backup-monitor-tests"


def _ulimit(limit: int, name: str, cap: int) -> str:
    # A container may not ask for more than the host's hard limit.
    _, hard = resource.getrlimit(limit)
    value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    return f"{name}={value}:{value}"


def storage_driver(cache: Path) -> str:
    """`overlay` if an overlay mounts in the cache's file system, else `vfs`."""
    with tempfile.TemporaryDirectory(dir=cache, prefix="overlay-probe-") as tmp:
        lower, upper, work, merged = (Path(tmp) / name for name in ("l", "u", "w", "m"))
        for path in (lower, upper, work, merged):
            path.mkdir()
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:
            return "vfs"
        subprocess.run(["umount", str(merged)], check=True)
        return "overlay"


def environment() -> dict[str, str]:
    """The current environment plus what makes `podman` work here (writes the two config files)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    driver = os.environ.get("BACKUP_MONITOR_CONTAINER_DRIVER") or storage_driver(cache)
    storage = cache / "storage.conf"
    # One storage per driver: podman refuses a storage made by another driver.
    storage.write_text(
        "[storage]\n"
        f'driver = "{driver}"\n'
        f'graphroot = "{cache / f"storage-{driver}"}"\n'
        f'runroot = "{cache / f"run-{driver}"}"\n'
    )
    containers = cache / "containers.conf"
    ulimits = [
        _ulimit(resource.RLIMIT_NOFILE, "nofile", 65536),
        _ulimit(resource.RLIMIT_NPROC, "nproc", 4096),
    ]
    containers.write_text(
        f'[containers]\nnetns = "host"\ndefault_ulimits = {ulimits!r}\n'.replace("'", '"')
        + "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    env = dict(os.environ)
    env.update(
        CONTAINERS_STORAGE_CONF=str(storage),
        CONTAINERS_CONF=str(containers),
        # The default isolation cannot set up cgroups here.
        BUILDAH_ISOLATION="chroot",
        # The OCI image format has no HEALTHCHECK: podman would drop it (docker keeps it).
        BUILDAH_FORMAT="docker",
    )
    return env


def podman(
    *args: str, env: dict[str, str], check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS`; with check, a failure raises with its output."""
    return run(["podman", *args], env=env, check=check, timeout=timeout)


def run(
    command: Sequence[str], env: dict[str, str], check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def base_image(env: dict[str, str]) -> str:
    """The local base image's name, made now if the storage does not hold it yet."""
    cas = sorted(HOST_EXTRA_CAS.glob("*.crt")) if HOST_EXTRA_CAS.is_dir() else []
    recipe = repr((SUITE, MIRROR, PACKAGES, BASE_ENV, [(ca.name, ca.read_bytes()) for ca in cas]))
    name = f"{BASE_NAME}:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if podman("image", "exists", name, env=env, check=False).returncode == 0:
        return name
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing (Debian's debootstrap; `make test` installs it)")
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            env=env,
            timeout=900,
        )
        for ca in cas:
            shutil.copy(ca, rootfs / "usr/local/share/ca-certificates" / ca.name)
        run(["chroot", str(rootfs), "update-ca-certificates"], env=env)
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        changes = [f"ENV {key}={value}" for key, value in BASE_ENV.items()]
        changes.append('CMD ["python3"]')
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", *(f"--change={change}" for change in changes), "-", name],
            stdin=tar.stdout,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"podman import of the base failed: {imported.stderr}")
    # Older bases (an earlier recipe) are not needed any more.
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_NAME, env=env)
    for old in listed.stdout.split():
        if old != name:
            podman("rmi", old, env=env, check=False)
    return name


def build_steps(output: str) -> set[str]:
    """The ids of the images a `podman build` made or reused, from its output (`--> ID`)."""
    return set(re.findall(r"^--> (?:Using cache )?([0-9a-f]{11,64})$", output, flags=re.MULTILINE))


def prune_except(steps: set[str], env: dict[str, str]) -> None:
    """Remove the untagged images (earlier builds) but those of `steps`: the last build's layers,
    both stages, stay as the cache of the next one (`podman image prune` would drop the builder
    stage's last step, whose output is never byte-identical, and so the runtime stage's)."""
    while True:
        listed = podman(
            "images", "--all", "--quiet", "--no-trunc", "--filter", "dangling=true", env=env
        )  # fmt: skip
        removable = [
            image
            for image in listed.stdout.split()
            if not any(image.removeprefix("sha256:").startswith(step) for step in steps)
        ]
        # An image with children refuses to go; it may once they are gone.
        removed = [podman("rmi", gone, env=env, check=False).returncode == 0 for gone in removable]
        if not any(removed):
            return
