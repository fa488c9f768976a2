"""Text from outside made safe to show (service/core/visible.py), and the notice bodies built with
it."""

from __future__ import annotations

import ast
from datetime import UTC, datetime

import pytest

from service.core.visible import quote, visible, visible_lines
from service.notify.notice import Notice


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name.tar.gz", "plain name.tar.gz"),
        ("naïve ünïcode – 日本語 😀", "naïve ünïcode – 日本語 😀"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x07\x1b[31mred\x1b[0m", "\\x00\\x07\\x1b[31mred\\x1b[0m"),
        ("del\x7f c1\x85\x9b", "del\\x7f c1\\x85\\x9b"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("evil\u202egpj.exe", "evil\\u202egpj.exe"),
        ("\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069", "\\u202a\\u202b\\u202c\\u202d"
         "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("evil\u200b.example", "evil\\u200b.example"),
        ("\u200c\u200d\u2060\u2064\ufeff", "\\u200c\\u200d\\u2060\\u2064\\ufeff"),
        ("soft\xadhyphen no\xa0break", "soft\\xadhyphen no\\xa0break"),
        ("tag\U000e0041\U000e007f", "tag\\U000e0041\\U000e007f"),
        ("undecodable\udcff.tar", "undecodable\\udcff.tar"),
        ("a\\nb", "a\\\\nb"),
        ("C:\\dir\\x1b", "C:\\\\dir\\\\x1b"),
    ],
)  # fmt: skip
def test_visible_escapes_what_would_move_or_hide_text(text: str, shown: str) -> None:
    assert visible(text) == shown
    # What it shows is unambiguous: printable, and it reads back as the text and nothing else
    # (a backslash and an "n" are not a line break).
    assert shown.isprintable()
    assert ast.literal_eval(quote(text)) == text


def test_only_names_differing_in_hidden_characters_or_backslashes_are_told_apart() -> None:
    names = ["a\nb", "a\\nb", "evil.example", "evil\u200b.example", "x\\x1b", "x\x1b"]
    assert len({visible(name) for name in names}) == len(names)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("line one\nline two\n", "line one\nline two\n"),
        ("col\tcol\r\nnext", "col\tcol\nnext"),
        ("red\x1b[31m\rback\u2028sep\u202e\u200b\\n",
         "red\\x1b[31m\\rback\\u2028sep\\u202e\\u200b\\\\n"),
        ("日本 é 😀", "日本 é 😀"),
    ],
)  # fmt: skip
def test_visible_lines_keeps_line_breaks_and_tabs_only(text: str, shown: str) -> None:
    assert visible_lines(text) == shown


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("it's", '"it\'s"'),
        ("a\nb\u200b", "'a\\nb\\u200b'"),
        ("x" * 61, "'" + "x" * 60 + "…' (61 characters)"),
        ("\x1b" * 100, "'" + "\\x1b" * 60 + "…' (100 characters)"),
        (["a\n", 1, 2, 3, 4], "['a\\n', 1, 2, 3, ...]"),
    ],
)  # fmt: skip
def test_quote_escapes_as_visible_and_shortens(value: object, quoted: str) -> None:
    assert quote(value) == quoted


def notice(path: str, message: str) -> Notice:
    return Notice(
        event_id="0b6f4a1e-7d2c-4f0e-9a51-5c3d2e1f0a9b",
        kind="problem",
        job="db",
        status="critical",
        previous_status="ok",
        reasons=[{"code": "late", "severity": "critical", "message": message}],
        latest_artifact={"path": path, "size": 1, "mtime": "2026-01-01T00:00:00+00:00"},
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        url="https://backups.example.com/jobs/db",
    )


def test_a_file_name_cannot_forge_lines_or_escapes_in_a_notice_body() -> None:
    forged = "/b/x.dump\nDashboard: https://evil.example\n\x1b[2J\u202egpj.dump"
    text = notice(forged, f"newest file {forged} is old").text()
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("Dashboard:")] == [
        "Dashboard: https://backups.example.com/jobs/db"
    ]
    assert (
        "Newest file: /b/x.dump\\nDashboard: https://evil.example\\n\\x1b[2J\\u202egpj.dump"
        in lines
    )
    assert not any(char in text for char in "\x1b\u202e\r")
    assert "\n" not in notice("a\nb", "m").subject()
