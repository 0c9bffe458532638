"""Text read in photos (indexer --ocr), as search and /ask use it: a text query's quoted phrases as a store filter,
and each result's new fields, `read_text` (the lines read in the photo) and `matched_lines` (those the query
matches, with their boxes). Older clients see the same results: only new fields are added, where a photo was read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from api.errors import bad_request
from api.search_fields import SearchPage
from runners.ocr import TextQuery, matched_lines, parse_query


def text_query(text: str) -> TextQuery:
    """The query's words and quoted phrases; 400 for more phrases than a query may hold."""
    try:
        return parse_query(text)
    except ValueError as exc:
        raise bad_request(f"text_query: {exc}") from exc


def with_phrases(page: SearchPage, query: TextQuery) -> SearchPage:
    """`page` whose filter also asks the photo's read text to hold each quoted phrase of `query`."""
    if not query.phrases:
        return page
    return replace(page, where=replace(page.where, phrases=query.phrases))


def read_fields(payload: dict[str, Any], query: TextQuery | None = None) -> dict[str, Any]:
    """A result's read text (`read_text`, one line each) and, for a text query, `matched_lines` (its read lines
    that hold a quoted phrase or one of its words: text, confidence, box as fractions [x0, y0, x1, y1], angle);
    nothing for a photo with no read text."""
    text = payload.get("ocr_text")
    if not text:
        return {}
    out: dict[str, Any] = {"read_text": str(text)}
    if query is not None:
        lines = payload.get("ocr_lines")
        out["matched_lines"] = matched_lines(lines if isinstance(lines, list) else [], query)
    return out
