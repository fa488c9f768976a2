"""A YAML file an operator wrote (jobs, channels): read it, and report every problem at once."""

from __future__ import annotations

from pathlib import Path

import yaml


class FileProblems(Exception):
    """The file cannot be used; `problems` lists every one, each naming its place."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


def read_yaml(path: str | Path, error: type[FileProblems]) -> object:
    """The document in `path`; raises `error` when the file cannot be read or is not YAML,
    with the line and column of a syntax error."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(name, [f"cannot read the file: {exc}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(name, [yaml_problem(exc)]) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return "not valid YAML: " + " ".join(str(exc).split())
