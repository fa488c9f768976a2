"""The dashboard list's pager: pure arithmetic of pages, rows and links."""

from __future__ import annotations

import pytest

from service.http.web.paging import page_count, pager, requested_page


@pytest.mark.parametrize(
    ("text", "page"),
    [(None, 1), ("", 1), ("1", 1), ("7", 7), ("0", 1), ("-2", 1), ("2.5", 1), ("x", 1),
     ("٣", 1), ("9" * 9, 999_999_999), ("9" * 10, 1)],
)  # fmt: skip
def test_requested_page(text, page):
    assert requested_page(text) == page


@pytest.mark.parametrize(
    ("total", "pages"), [(0, 1), (1, 1), (100, 1), (101, 2), (10_000, 100), (10_001, 101)]
)
def test_page_count(total, pages):
    assert page_count(total, 100) == pages


def test_rows_and_a_page_past_the_end():
    assert (pager(3, 250, {}).first_row, pager(3, 250, {}).last_row) == (201, 250)
    assert pager(9, 250, {}).page == 3
    empty = pager(1, 0, {})
    assert (empty.page, empty.pages, empty.first_row, empty.last_row) == (1, 1, 0, 0)


def test_links_keep_the_filters_in_order_and_drop_empty_ones():
    where = {"status": "ok", "tag": None, "q": "a&b c"}
    assert pager(2, 1000, where).href(3) == "/?status=ok&q=a%26b+c&page=3"
    assert pager(2, 1000, where).href(1) == "/?status=ok&q=a%26b+c"
    assert pager(2, 1000, {}).href(1) == "/"


@pytest.mark.parametrize(
    ("page", "pages", "links"),
    [
        (1, 1, [1]),
        (1, 3, [1, 2, 3]),
        (1, 100, [1, 2, 3, None, 100]),
        (5, 100, [1, 2, 3, 4, 5, 6, 7, None, 100]),
        (50, 100, [1, None, 48, 49, 50, 51, 52, None, 100]),
        (100, 100, [1, None, 98, 99, 100]),
        (4, 7, [1, 2, 3, 4, 5, 6, 7]),
    ],
)
def test_links_around_the_current_page(page, pages, links):
    assert pager(page, pages * 100, {}).links() == links
