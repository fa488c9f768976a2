"""Inline SVG charts for the dashboard: a size sparkline and a size-over-time chart.

Pure functions from numbers to markup: no script, no external asset, readable without colour
(flagged points are a different shape, and every chart has a text alternative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from service.units import format_size
from service.visible import visible


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


def size_chart(points: Sequence[ChartPoint], width: int = 720, height: int = 240) -> Markup:
    """Size over time with labelled axes; flagged artifacts are marked with a cross."""
    if not points:
        return Markup('<p class="muted">No backup file seen yet.</p>')
    left, right, top, bottom = 70, 12, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    start, end = points[0].mtime, points[-1].mtime
    span = end - start
    largest = max(point.size for point in points) or 1
    y_max = largest * 1.1

    def x(moment: datetime) -> float:
        if span.total_seconds() <= 0:
            return left + plot_w / 2
        return left + (moment - start) / span * plot_w

    def y(size: float) -> float:
        return top + plot_h - size / y_max * plot_h

    parts = [
        Markup(
            '<svg class="chart" viewBox="0 0 {w} {h}" width="100%" role="img" '
            'aria-labelledby="chart-title"><title id="chart-title">{title}</title>'
        ).format(
            w=width,
            h=height,
            title=f"Size of the last {len(points)} backup files, from "
            f"{format_size(min(p.size for p in points))} to {format_size(largest)}",
        ),
        Markup(
            '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
            '<line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>'
        ).format(l=left, r=width - right, t=top, b=top + plot_h),
    ]
    for index in range(5):
        value = y_max * index / 4
        parts.append(
            Markup(
                '<line class="grid" x1="{l}" y1="{y:.1f}" x2="{r}" y2="{y:.1f}"/>'
                '<text class="tick" x="{tx}" y="{ty:.1f}" text-anchor="end">{label}</text>'
            ).format(
                l=left,
                r=width - right,
                y=y(value),
                tx=left - 6,
                ty=y(value) + 4,
                label=format_size(value),
            )
        )
    ticks = _time_ticks(start, end)
    for index, moment in enumerate(ticks):
        # The end labels stay inside the chart.
        anchor = "start" if index == 0 and len(ticks) > 1 else "middle"
        anchor = "end" if index == len(ticks) - 1 and len(ticks) > 1 else anchor
        parts.append(
            Markup(
                '<text class="tick" x="{x:.1f}" y="{y}" text-anchor="{a}">{label}</text>'
            ).format(x=x(moment), y=height - 8, a=anchor, label=_time_label(moment, span))
        )
    line = " ".join(f"{x(p.mtime):.1f},{y(p.size):.1f}" for p in points)
    parts.append(Markup('<polyline class="line" points="{}"/>').format(line))
    for point in points:
        cx, cy = x(point.mtime), y(point.size)
        title = escape(  # the label is a file name: its control and bidi characters escaped
            visible(f"{point.label}: {format_size(point.size)}, {point.mtime:%Y-%m-%d %H:%M} UTC")
        )
        if point.flagged:
            parts.append(
                Markup(
                    '<g class="flag"><title>{t} (raised a reason)</title>'
                    '<path d="M{a:.1f},{b:.1f} L{c:.1f},{d:.1f} '
                    'M{a:.1f},{d:.1f} L{c:.1f},{b:.1f}"/>'
                    "</g>"
                ).format(t=title, a=cx - 5, b=cy - 5, c=cx + 5, d=cy + 5)
            )
        else:
            parts.append(
                Markup(
                    '<circle class="dot" cx="{:.1f}" cy="{:.1f}" r="3"><title>{}</title></circle>'
                ).format(cx, cy, title)
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
