"""Text from outside (file names, messages quoting them, receivers' answers, ping logs, values a
user gave) made safe to show to a person: the one home of escaping, shortening and quoting for
every plain-text output.

A file name may hold any character but `/` and NUL: a line break that forges a line in an
e-mail ("Dashboard: evil.example"), a terminal escape that repaints the operator's screen, a
bidi override that makes `evil‮gpj.exe` read as `evilexe.jpg`, a zero-width space (U+200B)
that makes `evil` + ZWSP + `.example` look like `evil.example`. Each character Python does not
count as printable (the set `repr()` escapes: controls, separators other than the space,
format characters such as zero-width and bidi marks, the soft hyphen, tag characters,
unassigned code points, lone surrogates from undecodable names) is shown as an escape
(`\\n`, `\\x1b`, `\\u200b`), and the backslash itself as `\\\\`, so what is shown reads back
one way only: a name holding a backslash and an `n` is not mistaken for one holding a line
break. Letters of every script, accents and emoji are printable and stay as they are. JSON
outputs escape by themselves; HTML escaping keeps markup out, but not these.

A value a user gave may also be 300 KB of text, or a YAML structure whose aliases expand to
millions of items: an error message quotes it shortened (`quote`), never whole.
"""

from __future__ import annotations

import reprlib

QUOTE_LIMIT = 60

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """`text` with every character that is not printable, and the backslash, shown as an escape
    (as `repr()` shows them, without the quotes)."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escape, text))


def visible_lines(text: str) -> str:
    """`visible(text)` for a text meant to have lines (a description, a script's output): its
    line breaks and tabs stay real (a CRLF becomes one line break), everything else is escaped.
    Only for outputs where a line break cannot forge anything (an HTML block, shown with
    `white-space: pre-wrap`), never for a line of a plain-text output."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join("\t".join(map(visible, line.split("\t"))) for line in lines)


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` cut to `limit` characters, with "…" when something was cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def _quoted(text: str) -> str:
    # The quotes repr() would choose, so a quoted text reads as Python and YAML users expect.
    mark = '"' if "'" in text and '"' not in text else "'"
    return mark + visible(text).replace(mark, "\\" + mark) + mark


def _short_repr(limit: int) -> reprlib.Repr:
    # Python 3.11's Repr takes no constructor arguments.
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlevel, shortener.maxlist, shortener.maxtuple = 2, 4, 4
    shortener.maxdict = shortener.maxset = shortener.maxfrozenset = 4
    return shortener


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` in quotes, escaped as `visible` does, at most about `limit` characters of it: a
    longer text is cut ("'xxxx…' (300000 characters)"), a container shows its first few items
    (whose texts repr() has escaped already)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return _quoted(value)
        return f"{_quoted(shorten(value, limit))} ({len(value)} characters)"
    try:
        return _short_repr(limit).repr(value)
    except ValueError:  # an integer of more than 4300 digits has no repr
        return f"<{type(value).__name__}>"
