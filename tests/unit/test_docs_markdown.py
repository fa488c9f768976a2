"""The API page's descriptions: Markdown `code` spans as <code>, everything else escaped."""

from __future__ import annotations

from service.http.api.openapi import inline_markdown


def test_code_spans_become_code_and_the_rest_is_escaped() -> None:
    assert str(inline_markdown("Filters: `status`, `tag`.")) == (
        "Filters: <code>status</code>, <code>tag</code>."
    )
    assert str(inline_markdown("a <b> & `<i>`")) == "a &lt;b&gt; &amp; <code>&lt;i&gt;</code>"
    assert str(inline_markdown("an odd ` backtick")) == "an odd ` backtick"
    assert str(inline_markdown(None)) == ""
