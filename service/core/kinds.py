"""The words the service judges and tells in, as `Literal` types shared by every layer: a
job's status, a reason's severity, a notice's kind. Pure: imports only service.core.visible.

service/core/rules.py decides the statuses (its STATUSES is the order every count and
metric lists them in); these are the same words, which a unit test keeps equal."""

from __future__ import annotations

from typing import Literal, TypeGuard, get_args

from service.core.visible import quote

Severity = Literal["critical", "warning", "unknown"]
Status = Literal["ok", "warning", "critical", "unknown", "pending", "paused"]
# What a notice tells: a job entering a bad status, its problems changing, its recovery, a
# reminder that it is still critical; a digest of its restore points (its `report`); or
# `notify test CHANNEL`'s message.
NoticeKind = Literal["problem", "changed", "recovery", "reminder", "digest", "test"]
NOTICE_KINDS: tuple[NoticeKind, ...] = get_args(NoticeKind)
_STATUSES: tuple[Status, ...] = get_args(Status)


def is_status(value: object) -> TypeGuard[Status]:
    """Whether `value` is one of the statuses."""
    return value in _STATUSES


def is_notice_kind(value: object) -> TypeGuard[NoticeKind]:
    """Whether `value` is one of the notice kinds."""
    return value in NOTICE_KINDS


def status_of(value: object) -> Status:
    """`value` as a status; ValueError when it is none (a stored row written by hand, or a
    bug: never a user's input, which is validated before)."""
    if not is_status(value):
        raise ValueError(f"unknown status {quote(value)}")
    return value


def notice_kind_of(value: object) -> NoticeKind:
    """`value` as a notice kind; ValueError when it is none (a stored row written by hand, or
    a bug)."""
    if not is_notice_kind(value):
        raise ValueError(f"unknown notice kind {quote(value)}")
    return value
