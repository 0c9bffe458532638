"""The rules by which read text is compared (runners/ocr/text.py): normalization, quoted phrases, matched lines, and
what `ocr_by` depends on. Plain functions: no model."""

from __future__ import annotations

import pytest

from runners.ocr import (
    MAX_PHRASES,
    ReadOptions,
    TextQuery,
    contains_phrase,
    matched_lines,
    normalized,
    parse_query,
    read_text_norm,
)


def test_normalized_folds_case_width_and_spaces_next_to_cjk() -> None:
    assert normalized("Golden  DRAGON\t") == "golden dragon"
    assert normalized("ＧＯＬＤＥＮ　Ｄｒａｇｏｎ") == "golden dragon"  # full-width letters and space (NFKC)
    assert normalized("生日快乐 小明") == normalized("生日快乐小明") == "生日快乐小明"
    assert normalized("EXIT 出口") == normalized("EXIT出口") == "exit出口"
    assert normalized("Straße") == "strasse"  # case folding, not lower()
    assert normalized("  ") == ""


def test_quoted_phrases_are_taken_out_and_normalized() -> None:
    query = parse_query('the "Golden  Dragon" sign “生日 快乐” 「出口」')
    assert query.phrases == ("golden dragon", "生日快乐", "出口")
    assert query.words == "the Golden Dragon sign 生日 快乐 出口"
    assert parse_query('an unpaired " quote').phrases == ()
    assert parse_query('"" empty').phrases == () and parse_query('""').words == '""'
    assert parse_query('"a" "A"').phrases == ("a",)  # the same phrase once
    assert parse_query("a  red\tcircle") == TextQuery("a  red\tcircle", ())  # no quotes: untouched
    with pytest.raises(ValueError, match="quoted phrases"):
        parse_query(" ".join(f'"w{i}"' for i in range(MAX_PHRASES + 1)))


def test_a_phrase_is_an_exact_substring_of_one_line_of_the_normalized_text() -> None:
    norm = read_text_norm(["金龙面馆", "Golden  Dragon", " "])
    assert norm == "金龙面馆\ngolden dragon"
    assert contains_phrase(norm, "golden dragon") and contains_phrase(norm, "龙面")
    assert not contains_phrase(norm, "dragon golden") and not contains_phrase(norm, "金龙面馆golden")
    assert not contains_phrase(norm, "")


def test_matched_lines_hold_a_phrase_or_a_word() -> None:
    lines = [{"text": "金龙面馆", "box": [0, 0, 1, 0.1]}, {"text": "Golden Dragon", "box": [0, 0.2, 1, 0.3]},
             {"text": "Dragonfly Tea", "box": [0, 0.4, 1, 0.5]}, {"text": "24h", "box": [0, 0.6, 1, 0.7]}]

    def texts(query: TextQuery) -> list[str]:
        return [line["text"] for line in matched_lines(lines, query)]

    assert texts(parse_query("dragon")) == ["Golden Dragon"]  # a Latin word whole, not inside "Dragonfly"
    assert texts(parse_query("DRAGONFLY")) == ["Dragonfly Tea"]
    assert texts(parse_query("面馆")) == ["金龙面馆"]
    assert texts(parse_query("面")) == ["金龙面馆"]  # one CJK character, when the query has one there
    assert texts(parse_query('"golden dragon"')) == ["Golden Dragon"]
    assert texts(parse_query("a to")) == []  # short Latin words match nothing on their own
    assert texts(parse_query("24h")) == ["24h"]
    assert matched_lines(["not a line", 3, {"text": "Golden"}], parse_query("golden")) == [{"text": "Golden"}]


def test_ocr_by_names_the_models_and_rules_but_not_the_runtime() -> None:
    base = ReadOptions()
    assert base.ocr_by.startswith("rapidocr-3.10.0/PP-OCRv6_det_small+PP-OCRv6_rec_small#")
    assert ReadOptions(runtime="openvino", threads=2).ocr_by == base.ocr_by
    assert ReadOptions(max_lines=5).ocr_by != base.ocr_by
    assert ReadOptions(min_confidence=0.7).ocr_by != base.ocr_by
    assert ReadOptions(max_pixels=1_000_000).ocr_by != base.ocr_by
