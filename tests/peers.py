"""Real peers for the remote sources' tests: an S3 endpoint (moto's server in its own process),
an OpenSSH sshd, restic and borg repositories made with the real binaries.

Registered in tests/conftest.py by importing the fixtures there. Every peer that needs a tool the
machine lacks calls `missing()` (a skip; a failure under CI=true). `make tools` installs restic,
borg (borgbackup), sshd (openssh-server) and ssh-keygen/ssh/sftp (openssh-client).

Invariants: every process a fixture starts is stopped (and waited for) when the fixture ends;
nothing is written outside pytest's temporary directories except /run/sshd (sshd's privilege
separation directory, created when running as root and missing); secrets (repository passwords)
reach the tools through files or environment variables, never the command line.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.support import free_port, missing

SSHD = "/usr/sbin/sshd"


def tool(name: str, *candidates: str) -> str:
    """The path of a tool, or `missing()` (a skip; a failure under CI=true)."""
    found = shutil.which(name)
    for candidate in candidates:
        if found is None and os.access(candidate, os.X_OK):
            found = candidate
    if found is None:
        missing(f"{name} is not installed (`make tools` installs it)")
    return found


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Signal a process, wait for it (SIGKILL after `timeout`), close its pipes."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def wait_until(check: Callable[[], bool], what: str, process: subprocess.Popen[Any]) -> None:
    """Poll `check` until it holds (10 s at most); fail early if `process` has died."""
    deadline = time.monotonic() + 10
    while not check():
        if process.poll() is not None:
            pytest.fail(f"{what}: the process ended with status {process.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not ready after 10 s")
        time.sleep(0.05)


def run(command: list[str], env: Mapping[str, str] | None = None, **kwargs: Any) -> str:
    """Run a tool, fail the test with its stderr if it fails, return its stdout."""
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False, **kwargs
    )
    if result.returncode != 0:
        pytest.fail(f"{command[:3]} failed ({result.returncode}): {result.stderr.strip()}")
    output: str = result.stdout
    return output


def fill(directory: Path, files: Mapping[str, bytes | int]) -> None:
    """Write files below `directory`: a body, or a size (that many pseudo-random bytes, so
    deduplication and compression do not make sizes meaningless)."""
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(content) if isinstance(content, int) else content)


# S3 -------------------------------------------------------------------------------------------


class LoopbackResolver(AbstractResolver):
    """An aiohttp resolver that answers 127.0.0.1 for `localhost` and every `*.localhost` name
    (RFC 6761), which glibc here does not (no nss-myhostname): what virtual-hosted addressing
    against `http://localhost:PORT` needs (`bucket.localhost:PORT`). Anything else fails."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        if host != "localhost" and not host.endswith(".localhost"):
            raise OSError(f"LoopbackResolver resolves only *.localhost, not {host!r}")

        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class S3Server:
    """moto's S3 endpoint. `endpoint_url` is by IP (botocore then uses path-style addressing
    even when asked for virtual); `virtual_endpoint_url` is by the name `localhost`, with which
    virtual addressing asks for `bucket.localhost:PORT` (needs `LoopbackResolver` here).
    Credentials are checked: `access_key_id`/`secret_access_key` may do anything; any other
    key id gets InvalidAccessKeyId, a wrong secret SignatureDoesNotMatch (see `client`)."""

    port: int
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def virtual_endpoint_url(self) -> str:
        return f"http://localhost:{self.port}"

    @staticmethod
    def unique_bucket(prefix: str = "bm") -> str:
        """A bucket name no other test uses (valid as a DNS label: lowercase, digits, '-')."""
        return f"{prefix}-{uuid.uuid4().hex[:16]}"

    @contextlib.asynccontextmanager
    async def client(
        self,
        addressing_style: str = "path",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        **config: Any,
    ) -> AsyncIterator[Any]:
        """An aiobotocore S3 client on this endpoint, with this server's credentials unless
        others are given. Virtual style uses `virtual_endpoint_url` and `LoopbackResolver`."""
        # imported here: botocore takes ~1.5 s to import, which every test run would pay
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        virtual = addressing_style == "virtual"
        connector_args: dict[str, Any] = {"resolver": LoopbackResolver()} if virtual else {}
        aio_config = AioConfig(
            s3={"addressing_style": addressing_style},
            connector_args=connector_args or None,
            retries={"max_attempts": 1},
            **config,
        )
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=self.virtual_endpoint_url if virtual else self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=aio_config,
        ) as client:
            yield client

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name unless given) and return its name."""
        bucket = name or self.unique_bucket()
        self.put_objects(bucket, {})
        return bucket

    def put_objects(
        self,
        bucket: str,
        objects: Mapping[str, bytes | int],
        last_modified: datetime | Mapping[str, datetime] | None = None,
    ) -> None:
        """Put objects (key -> body, or key -> size in zero bytes) straight into moto's
        backend (tests/moto_peer.py: 2 500 keys in well under a second; S3 PutObject takes
        ~12 ms each here), creating the bucket if missing. `last_modified` (aware; one for
        all, or per key) sets LastModified; otherwise moto stamps the time of the put. Bodies
        must be UTF-8 text. Keys are stored exactly as given (newlines, `..`, `//`)."""
        items: list[dict[str, Any]] = []
        for key, content in objects.items():
            item: dict[str, Any] = {"key": key}
            if isinstance(content, int):
                item["size"] = content
            else:
                item["body"] = content.decode()
            moment = last_modified.get(key) if isinstance(last_modified, Mapping) else last_modified
            if moment is not None:
                item["last_modified"] = moment.isoformat()
            items.append(item)
        request = urllib.request.Request(
            f"{self.endpoint_url}/_peer/objects",
            data=json.dumps({"bucket": bucket, "region": self.region, "objects": items}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert json.load(answer) == {"objects": len(items)}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server (tests/moto_peer.py: moto's own application and a seeding route) on a
    free loopback port, in its own process for the whole session; buckets are per test
    (`S3Server.unique_bucket`, `create_bucket`)."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        missing("moto[server] is not installed (`make venv` installs the dev dependencies)")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("moto_peer.py"))],
            stdout=subprocess.PIPE,
            stderr=errors,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # once bound (EOF if it failed)
        if not line.startswith(b"{"):
            stop(process)
            pytest.fail(f"moto's server did not start: {log.read_text(errors='replace')[-2000:]}")
        server = S3Server(**json.loads(line))

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(answers, "moto's server", process)
        yield server
    finally:
        stop(process)


# SSH ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshServer:
    """A running sshd and what a client needs: `client_key` (private key file, ed25519, no
    passphrase), `known_hosts` (this server's real host key, as `[127.0.0.1]:PORT`), and
    `remote_dir`, a fresh directory for this test that the server's side sees at the same
    path (the sshd runs on this machine as the current user)."""

    host: str
    port: int
    username: str
    client_key: Path
    known_hosts: Path
    wrong_known_hosts: Path
    remote_dir: Path
    host_public_key: str

    def ssh_options(self, known_hosts: Path | None = None) -> list[str]:
        """Options for the `ssh`/`sftp` client binaries: this key only, strict host checking
        against `known_hosts` (the right one unless given), no user configuration."""
        return [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-i",
            str(self.client_key),
            "-o",
            f"Port={self.port}",
        ]


@dataclass(frozen=True)
class _Sshd:
    port: int
    username: str
    client_key: Path
    known_hosts: Path
    wrong_known_hosts: Path
    host_public_key: str


def keygen(path: Path) -> str:
    """An ed25519 key pair at `path` (and `path`.pub); returns the public key line."""
    run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "bm-test", "-f", str(path)])
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="session")
def _sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Sshd]:
    sshd = tool("sshd", SSHD)
    base = tmp_path_factory.mktemp("sshd")
    host_public = keygen(base / "host_key")
    wrong_public = keygen(base / "wrong_host_key")
    client_public = keygen(base / "client_key")
    (base / "authorized_keys").write_text(client_public + "\n")
    root = os.geteuid() == 0
    if root:
        # sshd refuses to start as root without its privilege separation directory; Debian
        # creates it in its service unit, which a container without systemd never runs.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    username = getpass.getuser()
    for _attempt in range(3):
        port = free_port()
        config = base / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress 127.0.0.1:{port}",
                    f"HostKey {base / 'host_key'}",
                    f"PidFile {base / 'sshd.pid'}",
                    f"AuthorizedKeysFile {base / 'authorized_keys'}",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    f"UsePAM {'yes' if root else 'no'}",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        log = base / "sshd.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)], stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            if "Server listening" in log.read_text(errors="replace"):
                break
            time.sleep(0.05)
        if process.poll() is None and "Server listening" in log.read_text(errors="replace"):
            break
        stop(process)
    else:
        pytest.fail(f"sshd did not start: {log.read_text(errors='replace')[-2000:]}")
    entry = " ".join(host_public.split()[:2])
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {entry}\n")
    wrong_known_hosts = base / "wrong_known_hosts"
    wrong_known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(wrong_public.split()[:2])}\n")
    try:
        yield _Sshd(
            port=port,
            username=username,
            client_key=base / "client_key",
            known_hosts=known_hosts,
            wrong_known_hosts=wrong_known_hosts,
            host_public_key=entry,
        )
    finally:
        stop(process)


@pytest.fixture
def sshd_server(_sshd: _Sshd, tmp_path: Path) -> SshServer:
    """The session's sshd, with a fresh `remote_dir` for this test."""
    remote = tmp_path / "remote"
    remote.mkdir()
    return SshServer(
        host="127.0.0.1",
        port=_sshd.port,
        username=_sshd.username,
        client_key=_sshd.client_key,
        known_hosts=_sshd.known_hosts,
        wrong_known_hosts=_sshd.wrong_known_hosts,
        remote_dir=remote,
        host_public_key=_sshd.host_public_key,
    )


# restic ---------------------------------------------------------------------------------------


@dataclass
class ResticRepo:
    """A real restic repository (a local directory) and its password file.

    `env` is what every restic command needs: RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE, a cache
    of its own and TZ=UTC (restic's `--time` is read in the local zone)."""

    path: Path
    password_file: Path
    work: Path
    restic: str
    env: dict[str, str] = field(default_factory=dict)
    _counter: int = 0

    def command(self, *args: str, password_file: Path | None = None) -> str:
        env = dict(self.env)
        if password_file is not None:
            env["RESTIC_PASSWORD_FILE"] = str(password_file)
        return run([self.restic, *args], env=env)

    def backup(
        self,
        files: Mapping[str, bytes | int],
        time: datetime,
        host: str = "host-a",
        tags: tuple[str, ...] = (),
    ) -> str:
        """Back up fresh files (name -> body or size) as a snapshot taken at `time` (aware);
        returns the snapshot's full id. Paths are the files' directory below `work`."""
        self._counter += 1
        source = self.work / f"data-{self._counter}"
        fill(source, files)
        utc = time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        args = ["backup", "--json", "--time", utc, "--host", host]
        for tag in tags:
            args += ["--tag", tag]
        output = self.command(*args, str(source))
        summary = [line for line in output.splitlines() if '"summary"' in line]
        short_id = json.loads(summary[-1])["snapshot_id"]  # restic 0.14: the short id
        (snapshot_id,) = [s["id"] for s in self.snapshots() if s["id"].startswith(short_id)]
        return str(snapshot_id)

    def snapshots(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads(self.command("snapshots", "--json"))
        return result

    def forget(self, *snapshot_ids: str, prune: bool = False) -> None:
        self.command("forget", *snapshot_ids, *(["--prune"] if prune else []))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an EXCLUSIVE lock while inside: `restic key passwd` takes it, then waits for the
        new password on its stdin, which stays open until the block ends. Other commands then
        fail (status 1) with "unable to create lock in backend: repository is already locked
        exclusively by PID ..." (unless they run with --no-lock). restic 0.14 leaves its lock
        file behind even on SIGINT ("cleaning up"), so on exit `restic unlock` removes it
        (stale: its process is gone)."""
        locks = self.path / "locks"
        before = set(locks.iterdir())
        process = subprocess.Popen(
            [self.restic, "key", "passwd"],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: set(locks.iterdir()) != before, "restic lock", process)
            yield
        finally:
            stop(process, signal.SIGINT)
            self.command("unlock")


@pytest.fixture
def restic_repo(tmp_path: Path) -> Callable[..., ResticRepo]:
    """A factory of initialised restic repositories: `restic_repo(password="...")`. A wrong
    password: `repo.command("snapshots", password_file=<a file with another>)` fails."""
    restic = tool("restic")
    count = 0

    def make(password: str = "correct horse battery") -> ResticRepo:
        nonlocal count
        count += 1
        base = tmp_path / f"restic-{count}"
        base.mkdir()
        password_file = base / "password"
        password_file.write_text(password + "\n")
        repo = ResticRepo(path=base / "repo", password_file=password_file, work=base, restic=restic)
        repo.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),
            "TZ": "UTC",
            "RESTIC_REPOSITORY": str(repo.path),
            "RESTIC_PASSWORD_FILE": str(password_file),
            "RESTIC_CACHE_DIR": str(base / "cache"),
        }
        repo.command("init")
        return repo

    return make


# borg -----------------------------------------------------------------------------------------


@dataclass
class BorgRepo:
    """A real borg repository (repokey encryption) and its passphrase.

    `env` gives borg the passphrase in BORG_PASSPHRASE and keeps its config, cache, keys and
    security directories inside the test's directory (BORG_BASE_DIR). Borg 1.2 reads a
    passphrase from BORG_PASSPHRASE, BORG_PASSCOMMAND (e.g. `cat FILE`) or BORG_PASSPHRASE_FD;
    there is no BORG_PASSPHRASE_FILE in 1.2."""

    path: Path
    passphrase: str
    work: Path
    borg: str
    env: dict[str, str] = field(default_factory=dict)
    _counter: int = 0

    def command(
        self, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> str:
        return run([self.borg, *args], env={**self.env, **(env or {})}, cwd=cwd)

    def create(self, name: str, files: Mapping[str, bytes | int], time: datetime) -> str:
        """An archive `name` of fresh files (name -> body or size) dated `time` (aware; borg's
        --timestamp is UTC). Returns the archive's name."""
        self._counter += 1
        source = self.work / f"data-{self._counter}"
        fill(source, files)
        utc = time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self.command("create", "--timestamp", utc, f"{self.path}::{name}", ".", cwd=source)
        return name

    def list(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.command("list", "--json", str(self.path)))
        return result

    def delete(self, name: str) -> None:
        self.command("delete", f"{self.path}::{name}")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository's exclusive lock while inside (`borg with-lock REPO sleep`).
        Other commands wait --lock-wait seconds (1 by default) and then fail with
        "Failed to create/acquire the lock ... (timeout)"."""
        lock = self.path / "lock.exclusive"
        process = subprocess.Popen(
            [self.borg, "with-lock", str(self.path), "sleep", "600"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(lock.exists, "borg lock", process)
            yield
        finally:
            # the whole group: borg and its `sleep`
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            stop(process)


@pytest.fixture
def borg_repo(tmp_path: Path) -> Callable[..., BorgRepo]:
    """A factory of initialised borg repositories: `borg_repo(passphrase="...")`. A wrong
    passphrase: `repo.command("list", str(repo.path), env={"BORG_PASSPHRASE": "other"})`."""
    borg = tool("borg")
    count = 0

    def make(passphrase: str = "correct horse battery") -> BorgRepo:
        nonlocal count
        count += 1
        base = tmp_path / f"borg-{count}"
        base.mkdir()
        repo = BorgRepo(path=base / "repo", passphrase=passphrase, work=base, borg=borg)
        repo.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),
            "TZ": "UTC",
            "LANG": "C.UTF-8",
            "BORG_BASE_DIR": str(base / "borg-home"),
            "BORG_PASSPHRASE": passphrase,
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
            "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
            "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
        }
        repo.command("init", "--encryption=repokey", str(repo.path))
        return repo

    return make
