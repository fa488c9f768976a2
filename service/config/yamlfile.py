"""A YAML file an operator wrote (jobs, channels): read it, and report every problem at once.

The one reader of YAML in the service, so its bounds hold for every file: a regular file of at
most 1 MiB, at most MAX_DEPTH levels of nesting, and aliases that neither form a cycle nor
expand the document beyond MAX_NODES values (a "billion laughs" of nine nested anchors is 1 KB
of text and ran `jobs apply` into a MemoryError after 40 s).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.error import Mark, MarkedYAMLError
from yaml.nodes import Node

from service.config.settingfile import UnreadableFile, read_setting_file
from service.core.visible import quote, shorten

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 100
MAX_ALIASES = 10_000
MAX_NODES = 500_000  # values of the document with every alias expanded


class FileProblems(Exception):
    """The file cannot be used; `problems` lists every one, each naming its place."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


class LimitExceeded(MarkedYAMLError):
    """Valid YAML that the service refuses to expand."""

    def __init__(self, problem: str, mark: Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts what it composes: the nesting depth, the aliases and the size of
    the document with its aliases expanded, all checked before any Python object is built."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its expanded size, once composed

    def _grow(self, count: int, mark: Mark | None) -> None:
        self._expanded += count
        if self._expanded > MAX_NODES:
            raise LimitExceeded(
                f"the aliases expand the document beyond {MAX_NODES} values "
                "(refused: an alias bomb?)",
                mark,
            )

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self._next_mark()
            node = super().compose_node(parent, index)  # the anchored node
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise LimitExceeded(f"more than {MAX_ALIASES} aliases (*name)", mark)
            size = self._sizes.get(id(node))
            if size is None:
                raise LimitExceeded("an alias inside the node it names (a cycle)", mark)
            self._grow(size, mark)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise LimitExceeded(f"nested more than {MAX_DEPTH} levels deep", self._next_mark())
        before = self._expanded
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._grow(1, node.start_mark if node is not None else None)
        self._sizes[id(node)] = self._expanded - before
        return node

    def _next_mark(self) -> Mark | None:
        mark: Mark | None = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        return mark

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            # int() of 5000 digits, a 13th month, `!!int abc`: the value, not a bug.
            if "integer string conversion" in str(exc):
                reason = f"an integer of more than {sys.get_int_max_str_digits()} digits"
            else:
                reason = shorten(str(exc), 100)
            value = node.value if isinstance(node.value, str) else "…"
            raise ConstructorError(
                None, None, f"cannot read {quote(value)}: {reason}", node.start_mark
            ) from None


def read_yaml(path: str | Path, error: type[FileProblems]) -> object:
    """The document in `path`; raises `error` when the file cannot be read, is not YAML or
    exceeds the bounds, with the line and column of the problem."""
    name = str(path)
    try:
        text = read_setting_file(path, MAX_BYTES).decode("utf-8")
    except UnreadableFile as exc:
        raise error(name, [str(exc)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(name, [f"cannot read the file: {exc}"]) from None
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise error(name, [yaml_problem(exc)]) from None
    except RecursionError:  # MAX_DEPTH is meant to come first; this is the backstop
        raise error(name, ["not valid YAML: nested too deeply"]) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if isinstance(exc, LimitExceeded) and mark is not None:
        return f"refused at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if mark is not None and problem:
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"not valid YAML at {where}: {shorten(problem, 200)}"
    return "not valid YAML: " + shorten(" ".join(str(exc).split()), 300)
