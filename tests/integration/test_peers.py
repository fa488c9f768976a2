"""The remote sources' real peers (tests/peers.py) work with the bare tools and clients: moto's
S3 endpoint with aiobotocore in both addressing styles, OpenSSH's sshd with the ssh/sftp
binaries, restic and borg repositories with their own `--json` listings."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from tests.peers import BorgRepo, ResticRepo, S3Server, SshServer, tool


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# S3 -------------------------------------------------------------------------------------------


def record_urls(client: Any, urls: list[str]) -> None:
    """Append the URL of every request the client sends to `urls`."""
    client.meta.events.register("before-send.s3", lambda request, **_: urls.append(request.url))


async def test_s3_lists_2500_keys_in_pages_by_path_and_virtual_addressing(
    s3_server: S3Server,
) -> None:
    bucket = s3_server.create_bucket()
    keys = {f"daily/{number:05d}.tar.gz": number % 7 for number in range(2500)}
    s3_server.put_objects(bucket, keys)
    for style in ("path", "virtual"):
        urls: list[str] = []
        async with s3_server.client(addressing_style=style) as client:
            record_urls(client, urls)
            pages = [
                page
                async for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix="daily/"
                )
            ]
        assert [page["KeyCount"] for page in pages] == [1000, 1000, 500], style
        listed = {item["Key"]: item["Size"] for page in pages for item in page["Contents"]}
        assert listed == keys, style
        if style == "virtual":
            assert all(url.startswith(f"http://{bucket}.localhost:") for url in urls), urls[0]
        else:
            assert all(url.startswith(f"{s3_server.endpoint_url}/{bucket}") for url in urls)


async def test_s3_virtual_addressing_by_ip_endpoint_is_path_style(s3_server: S3Server) -> None:
    """botocore cannot put a bucket in front of an IP address: asked for virtual addressing
    with an IP endpoint, it addresses by path."""
    bucket = s3_server.create_bucket()
    urls: list[str] = []
    async with get_session().create_client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key_id,
        aws_secret_access_key=s3_server.secret_access_key,
        config=AioConfig(s3={"addressing_style": "virtual"}),
    ) as client:
        record_urls(client, urls)
        answer = await client.list_objects_v2(Bucket=bucket)
    assert answer["KeyCount"] == 0
    assert urls == [f"{s3_server.endpoint_url}/{bucket}?list-type=2&encoding-type=url"]


async def test_s3_keys_and_times_are_kept_as_given(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    keys: dict[str, bytes | int] = {
        "a/../b": b"1",
        "a//b": b"22",
        "x/ünï cödé ß.bak": 3,
        "line\nbreak": b"4444",
    }
    when = datetime(2025, 6, 7, 8, 9, 10, tzinfo=UTC)
    s3_server.put_objects(bucket, keys, last_modified=when)
    async with s3_server.client() as client:
        answer = await client.list_objects_v2(Bucket=bucket)
        body = await client.get_object(Bucket=bucket, Key="a//b")
        assert await body["Body"].read() == b"22"
    assert {item["Key"]: item["Size"] for item in answer["Contents"]} == {
        key: content if isinstance(content, int) else len(content) for key, content in keys.items()
    }
    assert {item["LastModified"] for item in answer["Contents"]} == {when}


async def test_s3_wrong_credentials_are_refused(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    codes = []
    for key_id, secret in [
        ("AKIAUNKNOWNKEY000000", s3_server.secret_access_key),
        (s3_server.access_key_id, "not-the-secret"),
    ]:
        async with s3_server.client(access_key_id=key_id, secret_access_key=secret) as client:
            with pytest.raises(ClientError) as raised:
                await client.list_objects_v2(Bucket=bucket)
        codes.append(raised.value.response["Error"]["Code"])
        assert "not-the-secret" not in str(raised.value)
    assert codes == ["InvalidAccessKeyId", "SignatureDoesNotMatch"]
    async with s3_server.client() as client:
        assert (await client.list_objects_v2(Bucket=bucket))["KeyCount"] == 0


async def test_s3_missing_bucket_is_an_error(s3_server: S3Server) -> None:
    async with s3_server.client() as client:
        with pytest.raises(ClientError) as raised:
            await client.list_objects_v2(Bucket=s3_server.unique_bucket())
    assert raised.value.response["Error"]["Code"] == "NoSuchBucket"


# SSH ------------------------------------------------------------------------------------------


def ssh(
    server: SshServer, *command: str, known_hosts: Any = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool("ssh"),
            *server.ssh_options(known_hosts),
            f"{server.username}@{server.host}",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_sshd_serves_the_remote_dir_to_ssh_and_sftp(sshd_server: SshServer) -> None:
    (sshd_server.remote_dir / "nightly").mkdir()
    (sshd_server.remote_dir / "nightly" / "db.dump").write_bytes(b"x" * 1234)
    listed = ssh(sshd_server, "ls", "-l", str(sshd_server.remote_dir / "nightly"))
    assert listed.returncode == 0, listed.stderr
    assert " 1234 " in listed.stdout and "db.dump" in listed.stdout
    sftp = subprocess.run(
        [
            tool("sftp"),
            "-b",
            "-",
            *sshd_server.ssh_options(),
            f"{sshd_server.username}@{sshd_server.host}",
        ],
        input=f"ls -l {sshd_server.remote_dir}/nightly\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert sftp.returncode == 0, sftp.stderr
    assert "db.dump" in sftp.stdout and " 1234 " in sftp.stdout


def test_sshd_with_a_wrong_or_unknown_host_key_is_refused(
    sshd_server: SshServer, tmp_path: Any
) -> None:
    wrong = ssh(sshd_server, "true", known_hosts=sshd_server.wrong_known_hosts)
    assert wrong.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in wrong.stderr
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    unknown = ssh(sshd_server, "true", known_hosts=empty)
    assert unknown.returncode == 255
    assert "Host key verification failed" in unknown.stderr
    assert ssh(sshd_server, "true").returncode == 0


# restic ---------------------------------------------------------------------------------------


def test_restic_repo_backups_forget_lock_and_wrong_password(
    restic_repo: Callable[..., ResticRepo], tmp_path: Any
) -> None:
    repo = restic_repo(password="s3cret-restic")
    first = repo.backup({"db.dump": 5000}, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), tags=("db",))
    second = repo.backup(
        {"db.dump": 7000, "etc/x.conf": b"abc"},
        datetime(2026, 1, 3, 3, 4, 5, tzinfo=UTC),
        host="host-b",
    )
    snapshots = repo.snapshots()
    assert [(s["id"], parse_time(s["time"]), s["hostname"], s.get("tags")) for s in snapshots] == [
        (first, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "host-a", ["db"]),
        (second, datetime(2026, 1, 3, 3, 4, 5, tzinfo=UTC), "host-b", None),
    ]
    stats = json.loads(repo.command("stats", "--json", "--mode", "restore-size", second))
    assert stats["total_size"] == 7003

    repo.forget(first)
    assert [s["id"] for s in repo.snapshots()] == [second]

    with repo.locked():
        locked = subprocess.run(
            [repo.restic, "snapshots", "--json"], env=repo.env, capture_output=True, text=True
        )
        assert locked.returncode == 1
        assert "repository is already locked exclusively" in locked.stderr
    assert [s["id"] for s in repo.snapshots()] == [second]

    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-password\n")
    wrong = subprocess.run(
        [repo.restic, "snapshots", "--json"],
        env={**repo.env, "RESTIC_PASSWORD_FILE": str(wrong_file)},
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 1
    assert "wrong password" in wrong.stderr
    assert "not-the-password" not in wrong.stderr + wrong.stdout


# borg -----------------------------------------------------------------------------------------


def test_borg_repo_archives_delete_lock_and_wrong_passphrase(
    borg_repo: Callable[..., BorgRepo],
) -> None:
    repo = borg_repo(passphrase="s3cret-borg")
    repo.create("nightly-1", {"db.dump": 5000}, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    repo.create("nightly-2", {"db.dump": 7000}, datetime(2026, 1, 3, 3, 4, 5, tzinfo=UTC))
    archives = repo.list()["archives"]
    assert [(a["name"], datetime.fromisoformat(a["time"])) for a in archives] == [
        ("nightly-1", datetime(2026, 1, 2, 3, 4, 5)),
        ("nightly-2", datetime(2026, 1, 3, 3, 4, 5)),
    ]
    info = json.loads(repo.command("info", "--json", f"{repo.path}::nightly-2"))
    assert info["archives"][0]["stats"]["original_size"] == 7000

    repo.delete("nightly-1")
    assert [a["name"] for a in repo.list()["archives"]] == ["nightly-2"]

    with repo.locked():
        locked = subprocess.run(
            [repo.borg, "list", "--json", str(repo.path)],
            env=repo.env,
            capture_output=True,
            text=True,
        )
        assert locked.returncode == 2
        assert "Failed to create/acquire the lock" in locked.stderr
    assert [a["name"] for a in repo.list()["archives"]] == ["nightly-2"]

    wrong = subprocess.run(
        [repo.borg, "list", "--json", str(repo.path)],
        env={**repo.env, "BORG_PASSPHRASE": "not-the-passphrase"},
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2
    assert "passphrase supplied in BORG_PASSPHRASE" in wrong.stderr
    assert "not-the-passphrase" not in wrong.stderr + wrong.stdout
