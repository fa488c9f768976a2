"""A pydantic ValidationError as a person reads it: the one flattening behind the API's 422
details, the jobs file's and the channels file's problems, and a bad setting's line.

Pure: imports pydantic's error type and the quoting of user values, nothing with I/O."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from service.core.visible import quote


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation error: where (`loc`, field names and list indexes as text) and what
    (`message`, a sentence without pydantic's "Value error, " prefix). `type` and `input` are
    pydantic's, for callers that word some errors their own way."""

    loc: tuple[str, ...]
    message: str
    type: str
    input: object


def problems_of(exc: ValidationError) -> list[Problem]:
    """Each error of `exc`, in pydantic's order, with:

    - validators' wrappers (`function-after[...]`) left out of `loc`;
    - "unknown field" for a key the model does not have;
    - the value given, quoted and shortened, after a literal's choices ("(got 'ssl')");
    - the `None` side of an optional field left out when its other side failed too (one
      error for one mistake)."""
    errors = exc.errors(include_url=False)
    problems = []
    for error in errors:
        if error["type"] == "none_required" and len(errors) > 1:
            continue
        loc = tuple(str(part) for part in error["loc"] if not str(part).startswith("function-"))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "literal_error":
            message = f"{message} (got {quote(error['input'])})"
        elif error["type"] == "source_type" and isinstance(error["input"], dict):
            # A source's kind that is none of the kinds (jobspec.Source): said of its `type`.
            loc = (*loc, "type")
            message = f"{message} (got {quote(error['input'].get('type'))})"
        problems.append(Problem(loc, message, error["type"], error["input"]))
    return problems
