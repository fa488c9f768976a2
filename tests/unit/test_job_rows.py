"""A job row read for a scan: its declaration's text is exactly what json.dumps makes, built
without a json.dumps call per column (writer._json_scalar, writer.declaration_json)."""

from __future__ import annotations

import json

import pytest

from service.scanner import writer


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -7, 2**70, "", "plain", 'a "quoted" line\nbreak \u00e9\u2603 \\',
     "\x00\x1f\x7f", "\ud800 lone surrogate", 1.5, float("1e300")],
)  # fmt: skip
def test_a_plain_column_reads_as_json_dumps_writes_it(value: object) -> None:
    assert writer._json_scalar(value) == json.dumps(value)


JSON_TEXT = {"tags", "source"}  # the JSON columns given a value below (read as their text)


def test_the_declaration_text_is_the_json_of_its_fields() -> None:
    fields = writer.DECLARATION_FIELDS
    stored = {name: None for name in fields} | {
        "description": "n\u00e9e \"x\"", "tags": '["db", "prod"]', "grace": 5400,
        "paused": True, "source": '{"type": "local", "path": "/b"}',
    }  # fmt: skip
    text = writer.declaration_json("db-\u00e9", [stored[name] for name in fields])
    # The very text json.dumps makes of each value (the key of the validated spec), the JSON
    # columns' own text as read.
    members = "".join(
        f",{json.dumps(name)}:"
        + (stored[name] if isinstance(stored[name], str) and name in JSON_TEXT
           else json.dumps(stored[name]))
        for name in fields
    )  # fmt: skip
    assert text == '{"name":' + json.dumps("db-\u00e9") + members + "}"
    decoded = json.loads(text)
    assert list(decoded) == ["name", *fields]
    assert decoded == {
        "name": "db-\u00e9",
        **{name: None for name in fields},
        "description": "n\u00e9e \"x\"", "tags": ["db", "prod"], "grace": 5400, "paused": True,
        "source": {"type": "local", "path": "/b"},
    }  # fmt: skip


@pytest.mark.parametrize("count", [0, 1, writer.MATRIX_WIDTH - 1, writer.MATRIX_WIDTH, 1000])
def test_an_array_parameter_goes_as_full_rows_padded_with_nulls(count: int) -> None:
    """as_matrix: rows of MATRIX_WIDTH values, in order, the last padded with None; read in
    order (as PostgreSQL's unnest reads them) they are the values, then only the padding."""
    values = [f"path-{index}" for index in range(count)]
    rows = writer.as_matrix(values)
    assert all(len(row) == writer.MATRIX_WIDTH for row in rows)
    flat = [value for row in rows for value in row]
    assert flat[:count] == values and set(flat[count:]) <= {None}
    assert len(flat) - count < writer.MATRIX_WIDTH
