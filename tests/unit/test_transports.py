"""The transports' registry (service.notify.transports): every channel type the channels file
accepts has exactly one transport, found by its type, and the declarations need none of them."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

from service.notify.config import CHANNEL_TYPES, Channel, parse_channels
from service.notify.transports import TRANSPORTS, transport

REPO = Path(__file__).resolve().parents[2]


def test_every_channel_type_has_its_transport_and_no_other() -> None:
    union = typing.get_args(typing.get_args(Channel)[0])
    declared = {typing.get_args(model.model_fields["type"].annotation)[0] for model in union}
    assert declared == set(CHANNEL_TYPES) == set(TRANSPORTS)
    for name, kind in TRANSPORTS.items():
        assert kind.type == name


def test_each_channel_gets_the_transport_of_its_type_with_its_secrets() -> None:
    channels = parse_channels(
        {"channels": {
            "hook": {"type": "webhook", "url": "https://h.example/p4th-s3cret?k=v4lue",
                     "headers": {"X-Token": "t0ken-value"}},
            "mail": {"type": "email", "host": "smtp.example", "from": "a@example.com",
                     "to": "b@example.com", "username": "u", "password": "pa55word"},
            "chat": {"type": "apprise", "urls": ["json://user:apprise-secret@h.example/path"]},
        }},
        "test",
    )  # fmt: skip
    hook, mail, chat = (transport(channels.channels[name]) for name in ("hook", "mail", "chat"))
    assert [hook.type, mail.type, chat.type] == ["webhook", "email", "apprise"]
    assert {"/p4th-s3cret?k=v4lue", "t0ken-value"} <= set(hook.secrets())
    assert mail.secrets() == ["pa55word"]
    assert "apprise-secret" in chat.secrets()


def test_reading_the_channels_file_loads_no_transport() -> None:
    """`jobs apply` and the other commands read channel declarations; sending is another
    module's business (and aiohttp, aiosmtplib, apprise cost start-up time)."""
    code = (
        "import sys, service.notify.config; "
        "print(sorted(m for m in ('aiohttp', 'aiosmtplib', 'apprise', "
        "'service.notify.transports') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
