"""Text from outside (file names, messages quoting them, receivers' answers, ping logs) made
safe to show to a person: one helper, used by every plain-text output.

A file name may hold any character but `/` and NUL: a line break that forges a line in an
e-mail ("Dashboard: evil.example"), a terminal escape that repaints the operator's screen, a
bidi override that makes `evil‮gpj.exe` read as `evilexe.jpg`. Each such character is shown as
an escape (`\\n`, `\\x1b`, `\\u202e`) instead. JSON outputs escape by themselves; HTML escaping
keeps markup out, but not these.
"""

from __future__ import annotations

import re

# C0 controls (line breaks and tabs too: the text is one field of a line), DEL, C1 controls;
# the Unicode line and paragraph separators; the bidi marks, embeddings, overrides and isolates.
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str) -> str:
    """`text` with every control, line-separator and bidi character shown as an escape."""
    return _HIDDEN.sub(_escape, text)
