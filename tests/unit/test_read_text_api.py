"""The API side of text in photos (api/read_text.py, api/asking.py's evidence): quoted phrases become the store
filter, results gain only new fields, bad queries are 400, and /ask's model sees each photo's read text."""

from __future__ import annotations

import pytest

from api.asking import photo_content
from api.errors import ApiError
from api.read_text import read_fields, text_query, with_phrases
from api.search_fields import search_page

PAYLOAD = {"path": "a.jpg", "ocr_text": "金龙面馆\nGolden Dragon", "ocr_by": "m",
           "ocr_lines": [{"text": "金龙面馆", "confidence": 0.99, "box": [0.1, 0.1, 0.5, 0.2], "angle": 0.0},
                         {"text": "Golden Dragon", "confidence": 0.98, "box": [0.1, 0.3, 0.6, 0.4], "angle": 1.0}]}


def test_phrases_join_the_page_filter_and_nothing_else_changes() -> None:
    page = search_page(5, 10, True, 1000, folder="trip")
    query = text_query('“Golden  Dragon” noodles')
    filtered = with_phrases(page, query)
    assert filtered.where.phrases == ("golden dragon",) and filtered.where.folder == "trip"
    assert (filtered.offset, filtered.dedup) == (10, True)
    assert with_phrases(page, text_query("noodles")) is page


def test_too_many_phrases_is_400() -> None:
    with pytest.raises(ApiError) as refused:
        text_query(" ".join(f'"p{i}"' for i in range(9)))
    assert (refused.value.status, refused.value.code) == (400, "invalid_argument")


def test_read_fields_are_new_fields_only_where_a_photo_was_read() -> None:
    assert read_fields({"path": "b.jpg", "description": "x"}) == {}
    assert read_fields({**PAYLOAD, "ocr_text": ""}) == {}
    assert read_fields(PAYLOAD) == {"read_text": "金龙面馆\nGolden Dragon"}
    found = read_fields(PAYLOAD, text_query("dragon"))
    assert [line["text"] for line in found["matched_lines"]] == ["Golden Dragon"]
    assert read_fields(PAYLOAD, text_query("zebra"))["matched_lines"] == []


def test_ask_gives_the_model_each_photos_read_text_beside_it() -> None:
    parts = photo_content([b"1", b"2"], "what is the restaurant called?", "Answer.", ["金龙面馆\nGolden Dragon", ""])
    assert parts[0] == {"type": "text", "text": 'Photo 1 (text read in it: "金龙面馆 / Golden Dragon"):'}
    assert parts[2] == {"type": "text", "text": "Photo 2:"}
    # /vqa's one photo, no instruction: unchanged.
    assert photo_content([b"1"], "q", "") == [{"type": "image", "image": b"1"}, {"type": "text", "text": "q"}]
