"""api/search.py without a server: the date, folder and paging fields of /text2image_search and
/image2image_search, and the messages a user sees when one is wrong (400 invalid_argument)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from api.errors import ApiError
from api.search_fields import as_text, library_folder, parse_time, search_page
from store.interface import SearchFilter

WINDOW = 1000  # SEARCH_MAX_WINDOW's default


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC).timestamp()


END_OF_MAY = dt.datetime(2024, 5, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC).timestamp()  # its last microsecond


def refusal(call: Callable[[], Any]) -> str:
    """The message of the 400 that `call` raises."""
    with pytest.raises(ApiError) as raised:
        call()
    assert (raised.value.status, raised.value.code) == (400, "invalid_argument")
    return raised.value.message


# ---------------------------------------------------------------- modified_after / modified_before

@pytest.mark.parametrize(("value", "end_of_day", "seconds"), [
    (None, False, None),
    ("", False, None),
    ("   ", True, None),
    ("1700000000", False, 1_700_000_000.0),
    (" 1700000000.5 ", False, 1_700_000_000.5),
    ("-1", False, -1.0),
    ("1e9", False, 1e9),
    ("2024-05-31", False, utc(2024, 5, 31)),
    ("2024-05-31", True, END_OF_MAY),  # a date as the upper bound takes in its whole day
    ("2024-05-31T18:30:00", False, utc(2024, 5, 31, 18, 30)),  # no offset: UTC
    ("2024-05-31T18:30:00", True, utc(2024, 5, 31, 18, 30)),  # a datetime is exact either way
    ("2024-05-31T18:30:00Z", False, utc(2024, 5, 31, 18, 30)),
    ("2024-05-31T18:30:00+08:00", False, utc(2024, 5, 31, 10, 30)),
    ("2024-05-31 18:30", False, utc(2024, 5, 31, 18, 30)),
    ("2001-09-09T01:46:40Z", False, 1_000_000_000.0),
])
def test_parse_time_accepts_seconds_dates_and_datetimes(value: str | None, end_of_day: bool,
                                                        seconds: float | None) -> None:
    assert parse_time("modified_after", value, end_of_day=end_of_day) == seconds


ISO_HINT = "is not an ISO 8601 date (2024-05-31), datetime (2024-05-31T18:30:00+08:00) or unix seconds"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("modified_after", "yesterday", f"modified_after: 'yesterday' {ISO_HINT}"),
    ("modified_before", "2024-13-01", f"modified_before: '2024-13-01' {ISO_HINT}"),
    ("modified_before", "2024-02-30", f"modified_before: '2024-02-30' {ISO_HINT}"),
    ("modified_after", "31/05/2024", f"modified_after: '31/05/2024' {ISO_HINT}"),
    ("modified_after", "2024-05-31T25:00", f"modified_after: '2024-05-31T25:00' {ISO_HINT}"),
    ("modified_after", "nan", "modified_after: 'nan' is not a finite number of seconds"),
    ("modified_before", "inf", "modified_before: 'inf' is not a finite number of seconds"),
    ("modified_after", " -Infinity ", "modified_after: ' -Infinity ' is not a finite number of seconds"),
])
def test_parse_time_refuses_with_the_field_and_the_value(name: str, value: str, says: str) -> None:
    assert refusal(lambda: parse_time(name, value)) == says


# ---------------------------------------------------------------- folder

@pytest.mark.parametrize(("folder", "recorded"), [
    (None, None),
    ("", None),
    ("/", None),
    (".", None),
    ("red", "red"),
    ("/red/", "red"),
    (" a/b ", "a/b"),
    ("./a/./b/", "a/b"),
    ("a//b", "a/b"),
    ("相册/2024 夏天", "相册/2024 夏天"),
    ("a..b", "a..b"),  # dots inside a name are a name
])
def test_library_folder_is_recorded_as_the_indexer_records_it(folder: str | None, recorded: str | None) -> None:
    assert library_folder(folder) == recorded


@pytest.mark.parametrize(("folder", "says"), [
    ("../etc", "folder: '../etc' leaves the image library"),
    ("a/../../b", "folder: 'a/../../b' leaves the image library"),
    ("a/..", "folder: 'a/..' leaves the image library"),
    ("a\\b", "folder: 'a\\\\b' is not a library folder (use / between folder names)"),
    ("a\0b", "folder: 'a\\x00b' is not a library folder (use / between folder names)"),
])
def test_library_folder_refuses_what_is_not_a_library_folder(folder: str, says: str) -> None:
    assert refusal(lambda: library_folder(folder)) == says


# ---------------------------------------------------------------- the whole page

def page(top_k: int = 10, offset: int = 0, dedup: bool = False, **fields: Any) -> Any:
    given: dict[str, Any] = {"folder": None, "modified_after": None, "modified_before": None, "min_width": None,
                             "min_height": None, "min_bytes": None, **fields}
    return search_page(top_k, offset, dedup, WINDOW, **given)


def test_search_page_builds_the_filter() -> None:
    built = page(top_k=5, offset=20, dedup=True, folder="/red/", modified_after="2024-05-01",
                 modified_before="2024-05-31", min_width=96, min_height=0, min_bytes=5000, exclude=("id-1",))
    assert (built.offset, built.dedup) == (20, True)
    assert built.where == SearchFilter(folder="red", modified_after=utc(2024, 5, 1), modified_before=END_OF_MAY,
                                       min_width=96, min_height=None, min_bytes=5000, exclude_ids=("id-1",))
    assert page().where == SearchFilter()  # nothing given: no condition at all


def test_search_page_takes_one_day_as_both_bounds() -> None:
    where = page(modified_after="2024-05-31", modified_before="2024-05-31").where
    assert where.modified_after == utc(2024, 5, 31)
    assert where.modified_before == END_OF_MAY < utc(2024, 6, 1)


@pytest.mark.parametrize(("top_k", "offset", "says"), [
    (100, 901, "offset + top_k is 1001, more than 1000 (SEARCH_MAX_WINDOW): "
               "narrow the search with filters instead of paging this deep"),
    (100, 950, "offset + top_k is 1050, more than 1000 (SEARCH_MAX_WINDOW): "
               "narrow the search with filters instead of paging this deep"),
])
def test_search_page_refuses_paging_past_the_window(top_k: int, offset: int, says: str) -> None:
    assert refusal(lambda: page(top_k=top_k, offset=offset)) == says


def test_search_page_allows_exactly_the_window() -> None:
    assert page(top_k=100, offset=900).offset == 900


@pytest.mark.parametrize(("fields", "says"), [
    ({"modified_after": "2024-06-01", "modified_before": "2024-05-01"},
     "modified_after is later than modified_before"),
    ({"modified_after": "1700000001", "modified_before": "1700000000"},
     "modified_after is later than modified_before"),
    ({"modified_after": "yesterday"}, f"modified_after: 'yesterday' {ISO_HINT}"),
    ({"modified_before": "2024-13-01"}, f"modified_before: '2024-13-01' {ISO_HINT}"),
    ({"folder": "../etc"}, "folder: '../etc' leaves the image library"),
])
def test_search_page_refuses_bad_fields(fields: dict[str, Any], says: str) -> None:
    assert refusal(lambda: page(**fields)) == says


# ---------------------------------------------------------------- form values

@pytest.mark.parametrize(("value", "text"), [
    (2024, "2024"), (1.5, "1.5"), (True, "true"), (False, "false"), ("红色", "红色"), (None, None),
])
def test_form_values_that_json_decoded_are_taken_back_as_text(value: Any, text: str | None) -> None:
    assert as_text(value) == text
