"""The dashboard list's pages: which page a `?page=` asks for, which rows it holds, and the
links to the others (each keeping the filters). Pure: no request, no database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

JOBS_PER_PAGE = 100
MAX_PAGE_DIGITS = 9  # a longer `?page=` is no page anyone was shown: the first
AROUND = 2  # page links shown on each side of the current one


@dataclass(frozen=True, slots=True)
class Pager:
    page: int  # 1-based, within 1..pages
    pages: int  # at least 1 (an empty list has one, empty, page)
    total: int  # rows matching, on every page together
    per_page: int
    filters: tuple[tuple[str, str], ...]  # what the links keep: (key, value), in this order

    @property
    def first_row(self) -> int:
        """The 1-based number of the page's first row (0 when nothing matches)."""
        return min(self.total, (self.page - 1) * self.per_page + 1)

    @property
    def last_row(self) -> int:
        return min(self.total, self.page * self.per_page)

    def href(self, page: int) -> str:
        """The link to `page` with the same filters (page 1 has no `page=`)."""
        query = list(self.filters) + ([("page", str(page))] if page > 1 else [])
        return "/?" + urlencode(query) if query else "/"

    def links(self) -> list[int | None]:
        """The page numbers to link: the first, the last, and AROUND on each side of the
        current one; None where pages are left out (shown as an ellipsis), but never for a
        single page (its number takes no more room)."""
        shown = {1, self.pages, *range(self.page - AROUND, self.page + AROUND + 1)}
        numbers = sorted(number for number in shown if 1 <= number <= self.pages)
        links: list[int | None] = []
        for before, number in zip([0, *numbers], numbers, strict=False):
            if number - before == 2 and before:
                links.append(before + 1)
            elif number - before > 2 and before:
                links.append(None)
            links.append(number)
        return links


def requested_page(text: str | None) -> int:
    """`?page=` as a number: 1 for anything but a positive integer of a sane length."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > MAX_PAGE_DIGITS:
        return 1
    return max(1, int(text))


def page_count(total: int, per_page: int = JOBS_PER_PAGE) -> int:
    return max(1, -(-total // per_page))


def pager(
    page: int, total: int, filters: Mapping[str, str | None], per_page: int = JOBS_PER_PAGE
) -> Pager:
    """The pager of `page` among `total` rows, a page past the end being the last one."""
    pages = page_count(total, per_page)
    kept = tuple((key, value) for key, value in filters.items() if value)
    return Pager(min(page, pages), pages, total, per_page, kept)
