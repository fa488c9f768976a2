"""The one YAML reader (service/config/yamlfile.py): ordinary anchors still work within the
bounds."""

from __future__ import annotations

import pytest

from service.config.yamlfile import MAX_ALIASES, FileProblems, read_yaml


def test_anchors_aliases_and_merge_keys_within_the_bounds(tmp_path):
    path = tmp_path / "jobs.yml"
    path.write_text(
        "x-daily: &daily {every: 1d}\n"
        "jobs:\n"
        + "".join(f"  - {{name: j{i}, schedule: {{<<: *daily, every: 2d}}}}\n" for i in range(3))
        + "  - {name: last, schedule: *daily}\n"
    )
    document = read_yaml(path, FileProblems)
    assert isinstance(document, dict)
    assert [job["schedule"] for job in document["jobs"]] == [{"every": "2d"}] * 3 + [
        {"every": "1d"}
    ]


def test_too_many_aliases_is_one_problem(tmp_path):
    path = tmp_path / "jobs.yml"
    path.write_text("x: &x 1\njobs: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n")
    with pytest.raises(FileProblems) as caught:
        read_yaml(path, FileProblems)
    assert caught.value.problems == [
        f"refused at line 2, column {8 + 4 * MAX_ALIASES}: more than {MAX_ALIASES} aliases (*name)"
    ]
