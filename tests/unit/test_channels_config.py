"""The channels file (service.notify.config) and the notice (service.notify.notice)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography import x509

from service.notify.config import (
    EMPTY,
    AppriseChannel,
    ChannelSet,
    ChannelsFileError,
    EmailChannel,
    WebhookChannel,
    load_channels,
    parse_channels,
    tls_context,
)
from service.notify.notice import Notice
from service.notify.notice import test_notice as make_test_notice

# Apprise loads its plugins when it first parses a URL; its email plugin imports the standard
# module imghdr, deprecated in Python 3.11 (apprise keeps it for PGPy). Nothing we can change.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

GOOD = """\
defaults: [ops-hook, chat]
channels:
  ops-hook:
    type: webhook
    url: https://hooks.example.com/backup
    headers: {Authorization: "Bearer ${HOOK_TOKEN}"}
  ops-mail:
    type: email
    host: smtp.example.com
    username: monitor
    password: ${SMTP_PASSWORD}
    from: Backup Monitor <backup-monitor@example.com>
    to: [ops@example.com, dba@example.com]
    timeout: 1m
  relay:
    type: email
    host: relay.internal
    security: none
    from: bm@example.com
    to: ops@example.com
  smtps:
    type: email
    host: smtp.example.com
    security: tls
    from: bm@example.com
    to: [ops@example.com]
  chat:
    type: apprise
    urls: ["ntfy://ntfy.sh/${NTFY_TOPIC}", "json://127.0.0.1:8080/hook"]
"""
ENV = {"HOOK_TOKEN": "hook-token-123", "SMTP_PASSWORD": "smtp-pass-456", "NTFY_TOPIC": "tpc789"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channels.yml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(document: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ChannelsFileError) as caught:
        parse_channels(document, "channels.yml", environ or {})
    assert str(caught.value) == "channels.yml: " + "; ".join(caught.value.problems)
    return caught.value.problems


def hook(**fields: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": "https://hooks.example.com/x", **fields}


def mail(**fields: Any) -> dict[str, Any]:
    return {"type": "email", "host": "smtp.example.com", "from": "a@example.com",
            "to": ["b@example.com"], **fields}  # fmt: skip


# --- a good file --------------------------------------------------------------------------------


def test_a_good_file_gives_every_channel_with_its_defaults(tmp_path):
    channels = load_channels(write(tmp_path, GOOD), environ=ENV)

    assert channels.defaults == ("ops-hook", "chat")
    assert list(channels.channels) == ["ops-hook", "ops-mail", "relay", "smtps", "chat"]
    webhook = channels.channels["ops-hook"]
    assert isinstance(webhook, WebhookChannel)
    assert webhook.url == "https://hooks.example.com/backup"
    assert {k: v.get_secret_value() for k, v in webhook.headers.items()} == {
        "Authorization": "Bearer hook-token-123"
    }
    assert webhook.timeout == 10
    mail_channel = channels.channels["ops-mail"]
    assert isinstance(mail_channel, EmailChannel)
    assert (mail_channel.host, mail_channel.port, mail_channel.security) == (
        "smtp.example.com", 587, "starttls",
    )  # fmt: skip
    assert mail_channel.username == "monitor"
    assert mail_channel.password is not None
    assert mail_channel.password.get_secret_value() == "smtp-pass-456"
    assert mail_channel.sender == "Backup Monitor <backup-monitor@example.com>"
    assert mail_channel.to == ("ops@example.com", "dba@example.com")
    assert mail_channel.timeout == 60
    assert mail_channel.ca_file is None
    relay = channels.channels["relay"]
    assert isinstance(relay, EmailChannel)
    assert (relay.port, relay.security, relay.to, relay.timeout) == (
        25, "none", ("ops@example.com",), 30,
    )  # fmt: skip
    smtps = channels.channels["smtps"]
    assert isinstance(smtps, EmailChannel)
    assert (smtps.port, smtps.security) == (465, "tls")
    chat = channels.channels["chat"]
    assert isinstance(chat, AppriseChannel)
    assert [url.get_secret_value() for url in chat.urls] == [
        "ntfy://ntfy.sh/tpc789", "json://127.0.0.1:8080/hook",
    ]  # fmt: skip


def test_no_file_means_no_channels():
    assert load_channels(None) is EMPTY
    assert EMPTY.channels == {}
    assert EMPTY.route(None) == ()
    assert EMPTY.route(["ops"]) == ("ops",)
    assert EMPTY.unknown(["ops"]) == ["ops"]


def test_an_explicit_port_and_a_ca_file_are_kept(tmp_path):
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))

    channels = parse_channels(
        {"channels": {"m": mail(port=2525, ca_file=str(ca_file), security="starttls")}}, "f"
    )

    channel = channels.channels["m"]
    assert isinstance(channel, EmailChannel)
    assert (channel.port, channel.ca_file) == (2525, ca_file)
    assert channels.defaults == ()


# --- route and unknown --------------------------------------------------------------------------


def test_route_uses_the_defaults_only_for_jobs_that_name_no_channel():
    channels = parse_channels(
        {"defaults": ["b", "a", "b"], "channels": {"a": hook(), "b": hook(), "c": hook()}}, "f"
    )

    assert channels.defaults == ("b", "a")
    assert channels.route(None) == ("b", "a")
    assert channels.route([]) == ()
    assert channels.route(["c", "a", "c", "zz"]) == ("c", "a", "zz")
    assert channels.unknown(["c", "zz", "a", "yy", "zz"]) == ["zz", "yy"]


def test_a_channel_set_is_immutable_and_checks_its_defaults():
    channels = ChannelSet({"a": WebhookChannel(type="webhook", url="http://h/x")}, ("a",))

    with pytest.raises(TypeError):
        channels.channels["b"] = channels.channels["a"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        channels.defaults = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="defaults name unknown channels: b"):
        ChannelSet({}, ("b",))


# --- environment variables ----------------------------------------------------------------------


def test_env_references_are_replaced_in_every_string():
    document = {
        "channels": {
            "a": hook(
                url="https://${HOST}/hooks/${PATH_PART}",
                headers={"X-Token": "${TOKEN}", "X-Literal": "$${TOKEN} and $TOKEN"},
            )
        }
    }
    env = {"HOST": "hooks.example.com", "PATH_PART": "p1", "TOKEN": "t0k3n"}

    channel = parse_channels(document, "f", env).channels["a"]

    assert isinstance(channel, WebhookChannel)
    assert channel.url == "https://hooks.example.com/hooks/p1"
    headers = {k: v.get_secret_value() for k, v in channel.headers.items()}
    assert headers == {"X-Token": "t0k3n", "X-Literal": "${TOKEN} and $TOKEN"}


def test_the_process_environment_is_used_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("BM_TEST_HOOK_TOKEN", "from-the-environment")
    path = write(
        tmp_path, "channels:\n  a: {type: webhook, url: 'http://h/${BM_TEST_HOOK_TOKEN}'}\n"
    )

    channel = load_channels(path).channels["a"]

    assert isinstance(channel, WebhookChannel)
    assert channel.url == "http://h/from-the-environment"


def test_each_unset_variable_is_named_once_with_its_place():
    document = {
        "defaults": ["${DEFAULT_CHANNEL}"],
        "channels": {
            "m": mail(username="u", password="${SMTP_PASSWORD}", port="${SMTP_PORT}"),
            "h": hook(headers={"X-Token": "${TOKEN}"}),
        },
    }

    assert problems_of(document) == [
        "channels.m: password: environment variable SMTP_PASSWORD is not set",
        "channels.m: port: environment variable SMTP_PORT is not set",
        "channels.h: headers.X-Token: environment variable TOKEN is not set",
        "defaults.0: environment variable DEFAULT_CHANNEL is not set",
    ]


# --- every problem, at once ---------------------------------------------------------------------


def test_every_problem_is_reported_together():
    document = {
        "defaults": ["ops", "missing-one"],
        "channels": {
            "ops": hook(url="ftp://files.example.com/x", timeout=0),
            "Bad_Name": hook(),
            "typo": {"type": "sms"},
            "untyped": {"url": "http://h/x"},
            "notmap": "http://h/x",
            "mail": mail(security="ssl", port=70000, to=[], bogus=1, **{"from": "nobody"}),
            "login": mail(username="monitor"),
            "chat": {"type": "apprise", "urls": []},
        },
        "channel": {},
    }

    assert problems_of(document) == [
        "unknown top-level field 'channel' (expected 'channels' and 'defaults')",
        "channels.ops: url: must be an http:// or https:// URL (got ftp)",
        "channels.ops: timeout: Input should be greater than 0",
        "channels: bad name 'Bad_Name': use lowercase letters, digits, '.', '_' and '-', "
        "starting with a letter (at most 100)",
        "channels.typo: type: unknown channel type 'sms' (expected webhook, email, apprise)",
        "channels.untyped: type: required: one of webhook, email, apprise",
        "channels.notmap: a channel is a mapping with a 'type' and its fields",
        "channels.mail: port: Input should be less than or equal to 65535",
        "channels.mail: security: Input should be 'starttls', 'tls' or 'none' (got 'ssl')",
        "channels.mail: from: 'nobody' is not an email address",
        "channels.mail: to: Value should have at least 1 item after validation, not 0",
        "channels.mail: bogus: unknown field",
        "channels.login: username and password go together: give both or neither",
        "channels.chat: urls: Value should have at least 1 item after validation, not 0",
        "defaults: unknown channel 'missing-one'",
    ]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (None, "the file must be a mapping with a 'channels' mapping (name: channel)"),
        ([], "the file must be a mapping with a 'channels' mapping (name: channel)"),
        ({"defaults": []}, "the file must be a mapping with a 'channels' mapping (name: channel)"),
        ({"channels": {}, "defaults": {"a": 1}}, "defaults: must be a list of channel names"),
        ({"channels": {"a": hook(url="not a url")}}, "channels.a: url: must be an http:// or "
         "https:// URL (got none)"),
        ({"channels": {"a": hook(url="https:///x")}}, "channels.a: url: the URL has no host"),
        ({"channels": {"a": hook(headers={"Bad Name": "x"})}},
         "channels.a: headers.Bad Name.[key]: 'Bad Name' is not a valid header name"),
        ({"channels": {"a": hook(headers={"X-Event-Id": "x"})}},
         "channels.a: headers.X-Event-Id.[key]: X-Event-Id is set by backup-monitor itself"),
        ({"channels": {"a": hook(headers={"idempotency-key": "x"})}},
         "channels.a: headers.idempotency-key.[key]: idempotency-key is set by backup-monitor "
         "itself"),
        ({"channels": {"a": hook(timeout="soon")}}, "channels.a: timeout: 'soon' is not a "
         "duration; use seconds or a string like '90s', '15m', '1h30m', '1d', '1w'"),
        ({"channels": {"a": hook(timeout=601)}},
         "channels.a: timeout: Input should be less than or equal to 600"),
        ({"channels": {"m": mail(port="25")}}, "channels.m: port: Input should be a valid integer"),
        ({"channels": {"m": mail(host="smtp example")}},
         "channels.m: host: 'smtp example' is not a host name or address"),
        ({"channels": {"m": mail(to=["ok@example.com", "@example.com"])}},
         "channels.m: to.1: '@example.com' is not an email address"),
    ],
)  # fmt: skip
def test_a_bad_field_names_the_channel_and_the_field(document, problem):
    assert problems_of(document) == [problem]


def test_a_ca_file_that_cannot_be_loaded_is_a_problem(tmp_path):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    document = {
        "channels": {
            "missing": mail(ca_file=str(tmp_path / "missing.pem")),
            "garbage": mail(ca_file=str(not_pem)),
            "relative": mail(ca_file="ca.pem"),
        }
    }

    problems = problems_of(document)

    assert problems[0].startswith(
        f"channels.missing: ca_file: cannot load {tmp_path / 'missing.pem'}: FileNotFoundError: "
    )
    assert problems[1].startswith(f"channels.garbage: ca_file: cannot load {not_pem}: SSLError: ")
    assert problems[2] == "channels.relative: ca_file: must be an absolute path (got 'ca.pem')"
    assert len(problems) == 3


def test_a_ca_bundle_with_text_around_its_certificates_loads(tmp_path):
    """ca_file is read by the guarded reader and handed to OpenSSL as data: like a bundle read
    by OpenSSL itself, comments (a system bundle's, not ASCII) around the certificates are
    ignored and every certificate is trusted."""
    first, second = trustme.CA(), trustme.CA()
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        "# Issuer: NetLock Arany (Class Gold) Főtanúsítvány\n".encode()
        + first.cert_pem.bytes()
        + b"\n# the next one\n"
        + second.cert_pem.bytes()
    )
    parse_channels({"channels": {"m": mail(ca_file=str(bundle))}}, "channels.yml", {})
    trusted = {int(str(cert["serialNumber"]), 16) for cert in tls_context(bundle).get_ca_certs()}
    for ca in (first, second):
        assert x509.load_pem_x509_certificate(ca.cert_pem.bytes()).serial_number in trusted


def test_a_bad_ca_file_is_quoted_shortened_and_escaped():
    (problem,) = problems_of({"channels": {"m": mail(ca_file="ca\x1b[2J" + "d/" * 2000)}})
    assert problem.startswith("channels.m: ca_file: must be an absolute path (got 'ca\\x1b[2J")
    assert problem.endswith("…' (4005 characters))") and len(problem) < 200, problem


def test_an_unreadable_file_is_one_problem(tmp_path):
    path = tmp_path / "nope.yml"

    with pytest.raises(ChannelsFileError) as caught:
        load_channels(path)

    assert caught.value.path == str(path)
    assert caught.value.problems == [
        f"cannot read the file: [Errno 2] No such file or directory: '{path}'"
    ]


def test_bad_yaml_is_reported_with_line_and_column(tmp_path):
    path = write(tmp_path, "channels:\n  a: {type: webhook\n  b: 1\n")

    with pytest.raises(ChannelsFileError) as caught:
        load_channels(path)

    assert caught.value.problems == [
        "not valid YAML at line 3, column 4: expected ',' or '}', but got ':'"
    ]


# --- secrets ------------------------------------------------------------------------------------

SECRETS = ("hook-token-123", "smtp-pass-456", "tpc789")


def test_secrets_are_not_in_the_repr_of_the_channels(tmp_path):
    channels = load_channels(write(tmp_path, GOOD), environ=ENV)

    for text in (repr(channels), str(channels), *(repr(c) for c in channels.channels.values())):
        for secret in SECRETS:
            assert secret not in text
    assert "**********" in repr(channels.channels["ops-mail"])


class Remember(logging.Handler):
    """What reaches the root logger's handlers: the service's logs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def service_logs() -> Iterator[Remember]:
    # Not caplog: pytest also hooks its capture onto loggers that do not propagate to the root.
    handler = Remember()
    root = logging.getLogger()
    root.addHandler(handler)
    saved = root.level
    root.setLevel(logging.DEBUG)
    yield handler
    root.setLevel(saved)
    root.removeHandler(handler)


def test_secrets_are_not_in_error_messages_nor_logs(service_logs):
    document = {
        "channels": {
            "h": hook(headers={"X-Token": "line\nbreak-secret-1", 7: "x"}),
            "m": mail(password="secret-pass-2", username=7, port=True),
            "c": {"type": "apprise", "urls": ["bogus://secret-token-3/x", 5]},
            "d": {"type": "apprise", "urls": "slack://secret-token-4"},
        }
    }

    problems = problems_of(document)

    text = "\n".join(problems + service_logs.lines)
    for secret in ("break-secret-1", "secret-pass-2", "secret-token-3", "secret-token-4"):
        assert secret not in text
    assert problems == [
        "channels.h: headers.X-Token: must not contain a line break or a NUL character",
        "channels.h: headers.7.[key]: Input should be a valid string",
        "channels.m: port: Input should be a valid integer",
        "channels.m: username: Input should be a valid string",
        "channels.c: urls.0: not a URL apprise understands (bogus://)",
        "channels.c: urls.1: Input should be a valid string",
        "channels.d: urls.0: not a URL apprise understands (slack://)",
    ]


def test_an_example_file_round_trips_through_yaml(tmp_path):
    # The same document, whether it comes from a file or is built in Python.
    from_file = load_channels(write(tmp_path, GOOD), environ=ENV)
    from_document = parse_channels(yaml.safe_load(GOOD), "f", ENV)

    assert from_file == from_document


# --- the notice ---------------------------------------------------------------------------------

OCCURRED = datetime(2024, 5, 1, 2, 30, tzinfo=UTC)


def notice(**fields: Any) -> Notice:
    values: dict[str, Any] = {
        "event_id": "6f1c2a9e-1111-4c2b-9d7e-0123456789ab",
        "kind": "problem",
        "job": "nightly-db",
        "status": "critical",
        "previous_status": "ok",
        "reasons": [
            {"code": "too_small", "severity": "critical", "message": "newest file is 0 B"},
            {"code": "late", "severity": "critical", "message": "late by 3 h"},
        ],
        "latest_artifact": {
            "path": "/backups/db/dump.sql.gz",
            "size": 1572864,
            "mtime": "2024-05-01T02:00:00+00:00",
        },
        "occurred_at": OCCURRED,
        "url": "https://backups.example.com/jobs/nightly-db",
    }
    values.update(fields)
    return Notice(**values)


def test_the_notice_as_json_has_every_field_and_the_service():
    assert notice().as_json() == {
        "service": "backup-monitor",
        "event_id": "6f1c2a9e-1111-4c2b-9d7e-0123456789ab",
        "kind": "problem",
        "job": "nightly-db",
        "status": "critical",
        "previous_status": "ok",
        "reasons": [
            {"code": "too_small", "severity": "critical", "message": "newest file is 0 B"},
            {"code": "late", "severity": "critical", "message": "late by 3 h"},
        ],
        "latest_artifact": {
            "path": "/backups/db/dump.sql.gz",
            "size": 1572864,
            "mtime": "2024-05-01T02:00:00+00:00",
        },
        "occurred_at": "2024-05-01T02:30:00+00:00",
        "url": "https://backups.example.com/jobs/nightly-db",
    }


@pytest.mark.parametrize(
    "original",
    [notice(), notice(url=None, latest_artifact=None, previous_status=None, reasons=[])],
)
def test_from_json_is_the_inverse_of_as_json(original):
    assert Notice.from_json(original.as_json()) == original


def test_from_json_converts_to_utc_and_refuses_a_naive_time():
    payload = notice().as_json()
    payload["occurred_at"] = "2024-05-01T04:30:00+02:00"
    assert Notice.from_json(payload).occurred_at == OCCURRED
    assert Notice.from_json(payload).occurred_at.utcoffset() == timedelta(0)

    payload["occurred_at"] = "2024-05-01T02:30:00"
    with pytest.raises(ValueError, match="no time zone"):
        Notice.from_json(payload)
    with pytest.raises(ValueError, match="aware"):
        notice(occurred_at=datetime(2024, 5, 1))


@pytest.mark.parametrize(
    ("fields", "subject"),
    [
        ({}, "[backup-monitor] CRITICAL nightly-db (was ok)"),
        ({"previous_status": None}, "[backup-monitor] CRITICAL nightly-db"),
        ({"status": "warning", "previous_status": "critical"},
         "[backup-monitor] WARNING nightly-db (was critical)"),
        ({"kind": "recovery", "status": "ok", "previous_status": "critical"},
         "[backup-monitor] RECOVERED nightly-db: ok (was critical)"),
        ({"kind": "reminder"}, "[backup-monitor] still CRITICAL nightly-db"),
        ({"kind": "test"}, "[backup-monitor] test message"),
    ],
)  # fmt: skip
def test_the_subject_is_one_line_per_kind(fields, subject):
    assert notice(**fields).subject() == subject


def test_the_text_tells_status_reasons_file_link_and_event():
    assert notice().text() == (
        "nightly-db is CRITICAL (was ok).\n"
        "\n"
        "- newest file is 0 B\n"
        "- late by 3 h\n"
        "\n"
        "Newest file: /backups/db/dump.sql.gz\n"
        "  size 1.5 MiB (1572864 bytes), modified 2024-05-01T02:00:00+00:00\n"
        "\n"
        "Dashboard: https://backups.example.com/jobs/nightly-db\n"
        "At: 2024-05-01 02:30:00 UTC\n"
        "Event: 6f1c2a9e-1111-4c2b-9d7e-0123456789ab\n"
    )


def test_the_text_of_a_recovery_without_file_or_link():
    text = notice(kind="recovery", status="ok", previous_status="critical", reasons=[],
                  latest_artifact=None, url=None).text()  # fmt: skip

    assert text == (
        "nightly-db has recovered: OK (was critical).\n"
        "\n"
        "Newest file: none\n"
        "\n"
        "At: 2024-05-01 02:30:00 UTC\n"
        "Event: 6f1c2a9e-1111-4c2b-9d7e-0123456789ab\n"
    )


def test_the_test_notice_names_its_channel():
    now = datetime(2024, 5, 1, 4, 30, tzinfo=timezone(timedelta(hours=2)))

    sent = make_test_notice("ops-hook", now)
    again = make_test_notice("ops-hook", now)

    assert (sent.kind, sent.job, sent.status, sent.previous_status) == (
        "test", "backup-monitor", "ok", None,
    )  # fmt: skip
    assert sent.occurred_at == OCCURRED
    assert sent.occurred_at.tzinfo == UTC
    assert sent.event_id != again.event_id
    assert sent.subject() == "[backup-monitor] test message"
    assert sent.reasons == [{
        "code": "test", "severity": "ok",
        "message": "Sent by `backup-monitor notify test ops-hook`: the channel 'ops-hook' works.",
    }]  # fmt: skip
    assert sent.text().startswith(
        "This is a test message from backup-monitor.\n\n"
        "- Sent by `backup-monitor notify test ops-hook`: the channel 'ops-hook' works.\n\n"
        "At: 2024-05-01 02:30:00 UTC\n"
    )
