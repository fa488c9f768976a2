"""The shared Literal types: the words the rules judge in, and their checked conversions."""

from __future__ import annotations

from typing import get_args

import pytest

from service.core import kinds, rules


def test_the_rules_judge_in_these_words():
    assert get_args(kinds.Status) == rules.STATUSES
    assert rules.Status is kinds.Status and rules.Severity is kinds.Severity


@pytest.mark.parametrize("status", rules.STATUSES)
def test_every_status_is_one(status):
    assert kinds.is_status(status)
    assert kinds.status_of(status) == status


@pytest.mark.parametrize("kind", ["problem", "changed", "recovery", "reminder", "test"])
def test_every_notice_kind_is_one(kind):
    assert kind in kinds.NOTICE_KINDS
    assert kinds.is_notice_kind(kind)
    assert kinds.notice_kind_of(kind) == kind


@pytest.mark.parametrize("value", ["", "OK", "failed", "ok ", None, 1, ["ok"], {"ok": 1}])
def test_anything_else_is_refused_by_name(value):
    assert not kinds.is_status(value)
    assert not kinds.is_notice_kind(value)
    with pytest.raises(ValueError, match=r"^unknown status "):
        kinds.status_of(value)
    with pytest.raises(ValueError, match=r"^unknown notice kind "):
        kinds.notice_kind_of(value)


def test_a_long_value_is_quoted_shortened():
    with pytest.raises(ValueError, match=r"^unknown status 'x") as caught:
        kinds.status_of("x" * 100_000)
    assert len(str(caught.value)) < 200
