"""The words of a description as BM25 sparse vectors (store/text_terms.py)."""

from __future__ import annotations

import zlib

import pytest

from store.text_terms import AVG_DOC_LEN, K1, B, query_terms, term_id, terms, tokens


def test_a_chinese_character_matches_inside_a_longer_word() -> None:
    assert set(query_terms("狗")) <= set(terms("草地上的小狗"))
    assert not set(query_terms("猫")) & set(terms("草地上的小狗"))


def test_cjk_runs_give_characters_and_pairs() -> None:
    assert tokens("小狗跑") == ["小", "狗", "跑", "小狗", "狗跑"]
    assert tokens("发票") == ["发", "票", "发票"]
    assert tokens("カナ") == ["カ", "ナ", "カナ"]
    assert tokens("한국") == ["한", "국", "한국"]


def test_a_two_character_word_shares_more_terms_with_the_document_that_has_it() -> None:
    query = set(query_terms("发票"))
    assert len(query & set(terms("这是一张发票"))) == 3
    assert len(query & set(terms("出发去车站买票"))) == 2  # 发 and 票, apart


def test_latin_words_fold_case_and_width() -> None:
    assert tokens("A Black CAT, café_bar Ｎｏ.123") == ["a", "black", "cat", "café", "bar", "no", "123"]
    assert terms("Dog") == terms("dog") == terms("DOG")
    assert tokens("dog小狗") == ["dog", "小", "狗", "小狗"]


def test_no_words_no_terms() -> None:
    assert terms("") == {} and query_terms("") == {}
    assert terms(" ,.!? ") == {} and query_terms("—") == {}


def test_ids_are_crc32_and_query_values_are_one() -> None:
    assert term_id("dog") == zlib.crc32(b"dog")
    assert query_terms("dog dog cat") == {zlib.crc32(b"dog"): 1.0, zlib.crc32(b"cat"): 1.0}


def test_document_values_are_bm25_term_frequency_weights() -> None:
    text = "dog dog cat"
    norm = K1 * (1 - B + B * 3 / AVG_DOC_LEN)
    got = terms(text)
    assert got[term_id("dog")] == pytest.approx(2 * (K1 + 1) / (2 + norm))
    assert got[term_id("cat")] == pytest.approx(1 * (K1 + 1) / (1 + norm))
    # Saturation: a word said more often counts more, but less than proportionally.
    assert got[term_id("cat")] < got[term_id("dog")] < 2 * got[term_id("cat")]
    # Length normalisation: the same word counts less in a longer description.
    assert terms("cat " + "word " * 100)[term_id("cat")] < terms("cat")[term_id("cat")]
