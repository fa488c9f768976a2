"""Why a cross-site change is refused (service/http/auth.py): the headers it quotes are the
sender's, so they are shown shortened and escaped, never forged into the log or the page."""

from __future__ import annotations

from service.http.auth import origin_refusal

OWN = {"https://backups.example.com"}


def test_a_same_origin_change_is_not_refused() -> None:
    assert origin_refusal("https://backups.example.com", "same-origin", OWN) is None
    assert origin_refusal(None, None, OWN) is None


def test_a_hostile_origin_is_quoted_shortened_and_escaped() -> None:
    origin = "https://evil.example\u202e\x1b[2J" + "x" * 5000
    refusal = origin_refusal(origin, None, OWN)
    assert refusal is not None
    assert refusal.startswith("came from another site's page (Origin: 'https://evil.example")
    assert "\\u202e\\x1b[2J" in refusal and refusal.isprintable()
    assert refusal.endswith("…' (5025 characters))") and len(refusal) < 200, refusal


def test_a_hostile_fetch_site_is_quoted_shortened_and_escaped() -> None:
    refusal = origin_refusal(None, "cross-site\n" + "y" * 5000, OWN)
    assert refusal is not None
    assert refusal.startswith("came from another site's page (Sec-Fetch-Site: 'cross-site\\ny")
    assert refusal.isprintable() and len(refusal) < 120, refusal
