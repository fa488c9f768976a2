"""The image builds, starts, serves, judges, stops cleanly, and refuses to start unprotected.

The README's Docker section is run as written, in a copy of the repository, with podman for
docker and only these changes: the build gets the local base image (`--build-arg PYTHON_IMAGE`,
no registry here), `/srv/backups` is a directory of this test, and port 8080 becomes a free port
given as `PORT` too (the container shares the host's network, where 8080 may be taken; a port
other than 8080 also proves the HEALTHCHECK follows `PORT`). The checks then look at the
container those commands started. The section's last block (`docker compose up`) is not run:
its `postgres:16-alpine` cannot be pulled here and Debian's podman-compose 1.0.3 ignores its
`depends_on` health condition; the image is run against the test PostgreSQL instead.

Run alone with `pytest -m container -s` (prints the image size and the times); leave out with
`-m "not container"`. Needs root and Debian's podman, runc and debootstrap (`make test`
installs them); without them it skips, and under CI=true it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.container.podman_local import base_image, build_steps, environment, podman, prune_except
from tests.support import REPO, TEST_DATABASE_URL, in_thread, missing, pg_admin

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

NAME = "backup-monitor"  # the container and image names the README uses
VOLUME = "backup-monitor-data"
# What the README's commands need from the repository: the build context and the example jobs.
CONTEXT = [
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "uv.lock",
    "README.md",
    "alembic.ini",
    "service",
    "alembic",
    "deploy",
    "docker-compose.yml",
]
TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
DAY = 86400


def readme_blocks() -> list[str]:
    """The shell blocks of the README's Docker section, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n### Docker\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the README's Docker section no longer has {old!r}: update this test"
    return text.replace(old, new)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http(method: str, url: str, token: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@dataclass
class Served:
    env: dict[str, str]
    workdir: Path
    port: int
    token: str
    shell: str  # the bash prelude that makes `docker` mean podman here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def readme(self, block: str) -> subprocess.CompletedProcess[str]:
        """Run a README block (after the substitutions) as a script in the copy of the repo."""
        if "docker run" in block:
            block = replace(block, "/srv/backups", str(self.workdir.parent / "backups"))
            block = replace(
                block, "-p 8080:8080", f"-p {self.port}:{self.port} -e PORT={self.port}"
            )
            block = replace(block, "127.0.0.1:8080", f"127.0.0.1:{self.port}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.shell + block],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=1100,
            check=False,
        )
        assert result.returncode == 0, (
            f"the README's commands failed ({result.returncode}):\n{block}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
        return result


def remove_leftovers(env: dict[str, str]) -> None:
    """What a test run leaves, or an interrupted one left: the container, its volume."""
    podman("rm", "--force", "--volumes", "--ignore", "--time", "0", NAME, env=env, check=False)
    podman("volume", "rm", "--force", VOLUME, env=env, check=False)


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    if os.geteuid() != 0:
        missing("the container test needs root (podman without a daemon, as root)")
    for command, package in TOOLS.items():
        if shutil.which(command) is None:
            missing(f"{command} is missing (Debian's {package}; `make test` installs it)")
    return environment()


def make_backups(root: Path, now: float) -> None:
    """Backups for deploy/jobs.example.yml's jobs: db-nightly healthy (7 dumps of 2 MiB, the
    newest fresh), files-hourly with one archive far below its 10 MiB minimum, vm-weekly with
    no directory at all. Readable by the container's uid 10001, as the README asks. The newest
    files are 10 minutes old: settled (a file modified in the last 2 minutes is still being
    written, its size not judged yet), on time for every schedule."""
    now -= 600
    db = root / "db"
    db.mkdir(parents=True)
    for age in range(7):
        dump = db / f"db-{age}.sql.gz"
        with dump.open("wb") as file:
            file.truncate(2 * 1024 * 1024)
        os.utime(dump, (now - age * DAY, now - age * DAY))
    files = root / "files"
    files.mkdir()
    (files / "files-0.tar.zst").write_bytes(b"x" * 1000)
    os.utime(files / "files-0.tar.zst", (now, now))
    for path in (root, db, files, *db.iterdir(), *files.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def served(
    podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The README's first Docker block run in a copy of the repository: built and started."""
    env = podman_env
    started = time.monotonic()
    base = base_image(env)
    print(f"\nlocal base image {base}: ready in {time.monotonic() - started:.1f} s")
    top = tmp_path_factory.mktemp("container")
    workdir = top / "repo"
    workdir.mkdir()
    for name in CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, workdir / name)
    make_backups(top / "backups", time.time())
    remove_leftovers(env)
    timings = top / "timings"
    shell = (
        f"export PYTHON_IMAGE={base}\n"
        "docker() {\n"
        '  if [ "$1" = build ]; then\n'
        "    shift; local start=$(date +%s.%N)\n"
        '    podman build --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" "$@"\n'
        f'    echo "build $(date +%s.%N) $start" >> {timings}\n'
        "  else\n"
        f'    [ "$1" = run ] && echo "run $(date +%s.%N)" >> {timings}\n'
        '    podman "$@"\n'
        "  fi\n"
        "}\n"
    )
    blocks = readme_blocks()
    served = Served(env=env, workdir=workdir, port=free_port(), token="", shell=shell)
    steps: set[str] = set()
    try:
        result = served.readme(blocks[0])
        steps = build_steps(result.stdout + result.stderr)
        ready_at = time.time()
        assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "ok", result.stdout
        marks = {line.split()[0]: line.split()[1:] for line in timings.read_text().splitlines()}
        build_end, build_start = map(float, marks["build"])
        print(f"image built in {build_end - build_start:.1f} s")
        start = ready_at - float(marks["run"][0])
        print(f"container ready (/health/ready 200) {start:.1f} s after `run`")
        size = int(podman("image", "inspect", "--format", "{{.Size}}", NAME, env=env).stdout)
        print(f"image size: {size / 1e6:.0f} MB ({size} bytes, on base {base})")
        served.token = (workdir / ".env").read_text().strip().removeprefix("API_TOKEN=")
        assert len(served.token) == 64
        yield served
    finally:
        logs = podman("logs", NAME, env=env, check=False)
        print(f"container log (last lines):\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        remove_leftovers(env)
        # The built image stays as the build cache; images of earlier builds go.
        if steps:
            prune_except(steps, env)


def test_runs_as_the_unprivileged_user(served: Served) -> None:
    user = podman("inspect", "--format", "{{.Config.User}}", NAME, env=served.env).stdout
    assert user.strip() == "10001:10001"
    status = podman("exec", NAME, "cat", "/proc/1/status", env=served.env).stdout
    uids = re.search(r"^Uid:\s+(.*)$", status, flags=re.MULTILINE)
    assert uids is not None
    assert set(uids.group(1).split()) == {"10001"}, status  # real, effective, saved, fs
    # PID 1 is the service itself (exec form, no shell in between): it gets the SIGTERM.
    command = podman("exec", NAME, "cat", "/proc/1/cmdline", env=served.env).stdout
    assert command.split("\0")[1:4] == ["/app/.venv/bin/backup-monitor", "serve", "--host"], command


def test_health_endpoints_answer(served: Served) -> None:
    assert http("GET", f"{served.url}/health/live") == (200, {"status": "ok"})
    status, body = http("GET", f"{served.url}/health/ready")
    assert (status, body["status"]) == (200, "ok"), body


def test_healthcheck_probes_the_port_served(served: Served) -> None:
    """The image's own HEALTHCHECK passes; its command fails against a port nobody serves, so it
    asks PORT (not 8080, which something on this host may well answer)."""
    checked = podman("healthcheck", "run", NAME, env=served.env, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = podman(
        "image", "inspect", "--format", "{{json .Config.Healthcheck}}", NAME, env=served.env
    )
    test = json.loads(config.stdout)["Test"]
    assert test[0] == "CMD", test
    elsewhere = podman(
        "exec", "--env", f"PORT={free_port()}", NAME, *test[1:], env=served.env, check=False
    )
    assert elsewhere.returncode != 0, "the HEALTHCHECK does not follow PORT"


def test_declared_jobs_are_judged(served: Served) -> None:
    """deploy/jobs.example.yml, mounted as JOBS_FILE, is applied at start; each job is judged
    on the read-only /backups through the API with the token from .env."""
    status, _ = http("GET", f"{served.url}/api/v1/jobs")
    assert status == 401
    expected = {
        "db-nightly": ("ok", []),
        "files-hourly": ("critical", ["too_small", "too_few"]),
        "vm-weekly": ("unknown", ["source_error"]),
    }
    for job, (want, codes) in expected.items():
        status, body = http("POST", f"{served.url}/api/v1/jobs/{job}/scan", served.token)
        assert status == 200, body
        assert body["status"] == want, body
        assert sorted(reason["code"] for reason in body["reasons"]) == sorted(codes), body
    status, body = http("GET", f"{served.url}/api/v1/jobs/db-nightly", served.token)
    assert (body["artifact_count"], body["latest_artifact"]["path"]) == (7, "db-0.sql.gz"), body


def test_refuses_to_start_without_a_token(served: Served) -> None:
    """A fresh database, no API_TOKEN, on 0.0.0.0: one line says why and what to do."""
    port = free_port()
    started = podman(
        "run", "--rm", "--env", f"PORT={port}", NAME, env=served.env, check=False, timeout=120
    )
    assert started.returncode != 0
    # podman's own complaints (no systemd here to time the HEALTHCHECK) left out.
    output = "".join(
        line
        for line in (started.stdout + started.stderr).splitlines(keepends=True)
        if not line.startswith('time="')
    )
    assert output.splitlines()[-1] == (
        "backup-monitor: refusing to serve the API without authentication on 0.0.0.0: create a "
        "token with `backup-monitor tokens create NAME` (or set API_TOKEN), listen on 127.0.0.1, "
        "or pass --insecure-no-auth if something in front of this server checks access"
    ), output
    assert output.count("refusing") == 1, output
    assert "Traceback" not in output


def wait_ready(url: str, timeout: float = 60) -> dict[str, Any]:
    """/health/ready's answer once it is 200; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http("GET", f"{url}/health/ready", timeout=5)
            if status == 200:
                return body  # type: ignore[no-any-return]
        except (OSError, ValueError):
            pass  # not listening yet
        assert time.monotonic() < deadline, f"{url}/health/ready not 200 after {timeout} s"
        time.sleep(0.2)


def test_serves_on_postgresql(served: Served) -> None:
    """The image's asyncpg against a real PostgreSQL (docker-compose.yml's setting): migrated
    at start, ready, and its token answers."""
    database = f"bm_container_{os.getpid()}"
    try:
        in_thread(lambda: asyncio.run(pg_admin(f'CREATE DATABASE "{database}"')))
    except Exception as exc:
        missing(f"PostgreSQL at {make_url(TEST_DATABASE_URL)!r} is unreachable: {exc}")
    url = make_url(TEST_DATABASE_URL).set(database=database)
    port = free_port()
    name = f"{NAME}-postgresql"
    try:
        podman(
            "run", "--detach", "--name", name, "--env", f"PORT={port}",
            "--env", f"DATABASE_URL={url.render_as_string(hide_password=False)}",
            "--env", f"API_TOKEN={served.token}", NAME,
            env=served.env,
        )  # fmt: skip
        body = wait_ready(f"http://127.0.0.1:{port}")
        assert body["checks"]["database"] == "ok", body
        status, _ = http("GET", f"http://127.0.0.1:{port}/api/v1/jobs", served.token)
        assert status == 200
    finally:
        podman(
            "rm",
            "--force",
            "--volumes",
            "--ignore",
            "--time",
            "0",
            name,
            env=served.env,
            check=False,
        )
        in_thread(
            lambda: asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        )


def test_sigterm_stops_it_in_time_with_exit_0(served: Served) -> None:
    """The README's stop command (SIGTERM to PID 1, then SIGKILL after its -t seconds)."""
    block = readme_blocks()[1]
    grace = int(re.search(r"-t (\d+)", block).group(1))  # type: ignore[union-attr]
    started = time.monotonic()
    served.readme(block)
    elapsed = time.monotonic() - started
    print(f"stopped in {elapsed:.1f} s (grace {grace} s)")
    assert elapsed < grace
    state = podman("inspect", "--format", "{{json .State}}", NAME, env=served.env).stdout
    assert json.loads(state)["ExitCode"] == 0, state
    logs = podman("logs", NAME, env=served.env)
    assert "Traceback" not in logs.stdout + logs.stderr
