"""Inline SVG charts for the dashboard: a size sparkline and a size-over-time chart.

Pure functions from numbers to markup: no script, no external asset, readable without colour
(flagged points are a different shape, and every chart has a text alternative).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from service.core.units import format_duration, format_size
from service.core.visible import visible
from service.http.web.words import declared_size


@dataclass(frozen=True, slots=True)
class ChartPoint:
    mtime: datetime
    size: int
    label: str  # the artifact's path
    flagged: bool = False  # the artifact raised a reason (too small, size drop, ...)


def sparkline(sizes: Sequence[int], width: int = 120, height: int = 24) -> Markup:
    """Sizes of the newest artifacts, oldest first, as a small line. Built with plain string
    formatting (only numbers and one escaped label go in): the dashboard draws 2 000 of them."""
    if not sizes:
        return Markup('<span class="muted">no files</span>')
    top = max(sizes) or 1
    step = width / max(len(sizes) - 1, 1)
    scale = (height - 4) / top
    points = " ".join(
        f"{index * step:.1f},{height - 2 - size * scale:.1f}" for index, size in enumerate(sizes)
    )
    label = escape(
        f"sizes of the last {len(sizes)} files, from {format_size(min(sizes))} "
        f"to {format_size(top)}, newest {format_size(sizes[-1])}"
    )
    return Markup(  # noqa: S704 (numbers and the escaped label only)
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{label}"><title>{label}</title><polyline fill="none" '
        f'stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>'
    )


def _time_ticks(start: datetime, end: datetime, count: int = 5) -> list[datetime]:
    if end <= start:
        return [start]
    step = (end - start) / (count - 1)
    return [start + step * index for index in range(count)]


def _time_label(moment: datetime, span: timedelta) -> str:
    if span <= timedelta(days=2):
        return moment.strftime("%d %H:%M")
    if span <= timedelta(days=400):
        return moment.strftime("%b %d")
    return moment.strftime("%Y-%m")


MAX_MISSING = 60  # slots marked on one chart: beyond that the chart says how many more


def missing_slots(
    deadline_after: Callable[[datetime], datetime],
    grace: timedelta,
    mtimes: Sequence[datetime],
    now: datetime,
) -> list[datetime]:
    """The moments a backup was expected and none came: after each file (oldest first), every
    slot whose deadline (`deadline_after(file)`, grace included) passed before the next file
    came, or before `now` after the newest. The job's own deadline rule decides, so this agrees
    with `late`. At most MAX_MISSING (the oldest ones dropped)."""
    slots: list[datetime] = []
    for index, moment in enumerate(mtimes):
        until = mtimes[index + 1] if index + 1 < len(mtimes) else now
        deadline = deadline_after(moment)
        while deadline < until and len(slots) < 10 * MAX_MISSING:
            expected = deadline - grace
            slots.append(expected)
            deadline = deadline_after(expected)
    return slots[-MAX_MISSING:]


_BINARY = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024), ("B", 1))
_TIME = (("h", 3600), ("min", 60), ("s", 1))


def nice_ticks(
    top: float, count: int = 5, units: Sequence[tuple[str, int]] = _BINARY
) -> tuple[list[float], str, int]:
    """Round ticks from 0 covering `top` bytes: at most `count` steps of 1, 2 or 5 times a
    power of ten in one binary unit (0, 2, 4, 6, 8, 10 MiB), never 2.9 / 5.7 / 8.6 MiB.
    Returns the tick values in bytes, the unit's name and its size."""
    top = max(top, 1)
    name, unit = next(((n, u) for n, u in units if top >= u), units[-1])
    raw = top / unit / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if unit == 1:
        step = max(1, math.ceil(step))
    steps = math.ceil(top / unit / step - 1e-9)
    return [index * step * unit for index in range(steps + 1)], name, unit


def _tick_label(value: float, name: str, unit: int) -> str:
    return f"{round(value / unit, 3):g} {name}"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"


def duration_chart(points: Sequence[ChartPoint], height: int = 200) -> Markup:
    """How long each finished run took (ChartPoint.size in seconds), over time; failed runs are
    crosses."""
    if not points:
        return Markup('<p class="muted">No finished run with a start ping yet.</p>')
    return size_chart(points, height, kind="duration")


def size_chart(
    points: Sequence[ChartPoint],
    height: int = 240,
    thresholds: Sequence[tuple[str, int]] = (),
    kind: str = "size",
    missing: Sequence[datetime] = (),
) -> Markup:
    """Size over time with labelled axes; artifacts that raised a size reason are crosses.

    The chart is as wide as its box and `height` px tall with no viewBox: horizontal positions are
    percentages, so the text keeps the size the stylesheet gives it (never 5 px on a phone or
    19 px on a desktop). `thresholds` ((label, bytes): the job's min_size, max_size) are dashed
    lines; one far above the files (over twice the largest) is named in the title instead, so it
    does not flatten the files into the axis."""
    if not points:
        return Markup('<p class="muted">No backup file seen yet.</p>')
    top, bottom, inset = 18, 26, 0.02
    plot_h = height - top - bottom
    start, end = points[0].mtime, max([points[-1].mtime, *missing])
    span = end - start
    largest = max(point.size for point in points)
    drawn = [(label, size) for label, size in thresholds if size <= 2 * max(largest, 1)]
    far = [(label, size) for label, size in thresholds if (label, size) not in drawn]
    # 5 % headroom: the top label never sits on the newest dot.
    ticks, unit_name, unit = nice_ticks(
        1.05 * max([largest, *(size for _, size in drawn)]),
        units=_TIME if kind == "duration" else _BINARY,
    )
    fmt = format_duration if kind == "duration" else format_size
    y_max = ticks[-1]

    def x(moment: datetime) -> str:
        if span.total_seconds() <= 0:
            return _pct(0.5)
        return _pct(inset + (moment - start) / span * (1 - 2 * inset))

    def y(size: float) -> float:
        return top + plot_h - size / y_max * plot_h

    title = (
        f"Duration of the last {len(points)} runs, from "
        if kind == "duration"
        else f"Size of the last {len(points)} backup files, from "
    ) + f"{fmt(min(p.size for p in points))} to {fmt(largest)}"
    title += "".join(f"; {label} {declared_size(size)} (above the chart)" for label, size in far)
    parts = [
        Markup(
            '<svg class="chart" width="100%" height="{h}" role="img" aria-labelledby="chart-title">'
            '<title id="chart-title">{title}</title>'
        ).format(h=height, title=title),
        Markup('<line class="axis" x1="0" y1="{b}" x2="100%" y2="{b}"/>').format(b=top + plot_h),
    ]
    for value in ticks:
        # The size sits above its grid line at the left edge: no margin to guess a width for.
        parts.append(
            Markup(
                '<line class="grid" x1="0" y1="{y:.1f}" x2="100%" y2="{y:.1f}"/>'
                '<text class="tick size" x="0" y="{ty:.1f}">{label}</text>'
            ).format(y=y(value), ty=y(value) - 3, label=_tick_label(value, unit_name, unit))
        )
    for label, size in drawn:
        parts.append(
            Markup(
                '<g class="threshold"><line x1="0" y1="{y:.1f}" x2="100%" y2="{y:.1f}"/>'
                '<text class="tick" x="100%" y="{ty:.1f}" text-anchor="end">{label}</text></g>'
            ).format(y=y(size), ty=y(size) - 3, label=f"{label} {declared_size(size)}")
        )
    moments = _time_ticks(start, end)
    # Runs a few seconds apart share a label: each label once.
    labels = [_time_label(moment, span) for moment in moments]
    moments = [m for i, m in enumerate(moments) if i == 0 or labels[i] != labels[i - 1]]
    for index, moment in enumerate(moments):
        # The end labels stay inside the chart.
        anchor = "start" if index == 0 and len(moments) > 1 else "middle"
        anchor = "end" if index == len(moments) - 1 and len(moments) > 1 else anchor
        parts.append(
            # Every other inner label is "minor": a phone hides those (the text keeps its size).
            Markup('<text class="{c}" x="{x}" y="{y}" text-anchor="{a}">{label}</text>').format(
                c="tick minor" if index % 2 and index != len(moments) - 1 else "tick",
                x=x(moment),
                y=height - 8,
                a=anchor,
                label=_time_label(moment, span),
            )
        )
    for moment in missing:
        # A hollow triangle on the axis: a backup was due then and never came.
        parts.append(
            Markup(
                '<g class="missing"><title>a backup expected about {t} UTC never came</title>'
                '<svg x="{x}" y="{y}" overflow="visible"><path d="M-5,-9 L5,-9 L0,-1 Z"/></svg></g>'
            ).format(t=f"{moment:%Y-%m-%d %H:%M}", x=x(moment), y=top + plot_h)
        )
    parts.append(Markup('<g class="line">'))
    for before, after in itertools.pairwise(points):
        parts.append(
            Markup('<line x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}"/>').format(
                x(before.mtime), y(before.size), x(after.mtime), y(after.size)
            )
        )
    parts.append(Markup("</g>"))
    for point in points:
        cx, cy = x(point.mtime), y(point.size)
        label = escape(  # the label is a file name: its control and bidi characters escaped
            visible(f"{point.label}: {fmt(point.size)}, {point.mtime:%Y-%m-%d %H:%M} UTC")
        )
        if point.flagged:
            # A nested svg places the cross at a percentage; its own coordinates stay in px.
            parts.append(
                Markup(
                    '<g class="flag"><title>{t} ({problem})</title>'
                    '<svg x="{x}" y="{y:.1f}" overflow="visible">'
                    '<path d="M-5,-5 L5,5 M-5,5 L5,-5"/></svg></g>'
                ).format(
                    x=cx,
                    y=cy,
                    t=label,
                    problem="failed" if kind == "duration" else "a size problem",
                )
            )
        else:
            parts.append(
                Markup(
                    '<circle class="dot" cx="{}" cy="{:.1f}" r="3"><title>{}</title></circle>'
                ).format(cx, cy, label)
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
