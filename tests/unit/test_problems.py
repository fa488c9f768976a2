"""The one flattening of pydantic's ValidationError."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator

from service.core.problems import Problem, problems_of


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["fast", "slow"] = "fast"


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "x"
    inner: Inner = Inner()
    items: list[int] = []

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        if value != value.lower():
            raise ValueError(f"must be lowercase (got {value!r})")
        return value


def problems(data: object) -> list[Problem]:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(data)
    return problems_of(caught.value)


def test_a_validator_message_loses_pydantic_prefix():
    (problem,) = problems({"name": "Big"})
    assert (problem.loc, problem.message) == (("name",), "must be lowercase (got 'Big')")
    assert problem.type == "value_error"
    assert problem.input == "Big"


def test_an_unknown_field_nested_and_an_index():
    found = problems({"inner": {"speed": 1}, "items": [1, "two"]})
    assert [(p.loc, p.message) for p in found] == [
        (("inner", "speed"), "unknown field"),
        (("items", "1"), "Input should be a valid integer, unable to parse string as an integer"),
    ]


@pytest.mark.parametrize(("given", "shown"), [("ssl", "'ssl'"), (5, "5"), ("x" * 300, "(300 ")])
def test_a_literal_quotes_the_value_given(given, shown):
    (problem,) = problems({"inner": {"mode": given}})
    assert problem.loc == ("inner", "mode")
    assert problem.message.startswith("Input should be 'fast' or 'slow' (got ")
    assert shown in problem.message
    assert len(problem.message) < 150  # shortened, never whole


def test_validator_wrappers_are_left_out_of_the_location():
    def same(value: object) -> object:
        return value

    class Wrapped(BaseModel):
        value: Annotated[int, AfterValidator(same)] | Annotated[str, AfterValidator(same)]

    with pytest.raises(ValidationError) as caught:
        Wrapped.model_validate({"value": 1.5j})
    assert any("function-after" in str(error["loc"]) for error in caught.value.errors())
    assert [p.loc for p in problems_of(caught.value)] == [("value",), ("value",)]


class EveryOrCron(BaseModel):
    every: int
    cron: None = None  # the other branch's field, refused here


def test_the_none_side_is_left_out_beside_another_error_only():
    with pytest.raises(ValidationError) as caught:
        EveryOrCron.model_validate({"every": "x", "cron": "0 2 * * *"})
    assert {error["type"] for error in caught.value.errors()} == {"int_parsing", "none_required"}
    assert [p.loc for p in problems_of(caught.value)] == [("every",)]
    with pytest.raises(ValidationError) as caught:
        EveryOrCron.model_validate({"every": 1, "cron": "0 2 * * *"})
    assert [(p.loc, p.type) for p in problems_of(caught.value)] == [(("cron",), "none_required")]
