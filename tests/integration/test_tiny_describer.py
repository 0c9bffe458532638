"""The committed tiny describer (tests/fixtures/tiny_describer) through runners.vlm.VisionLanguageModel.

The describe-stage and hybrid-search tests rely on it: asked config.DEFAULT_DESCRIBE_PROMPT about a
shapes.draw_described image, it writes the JSON the describe stage parses, with the right colour and the word
drawn in the image. These answers are the model's own, on images it never saw in training.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from shapes import COLOR_ZH, COLORS, SHAPES, WORDS, draw_described

from config import DEFAULT_DESCRIBE_PROMPT
from runners.vlm import Generation, VisionLanguageModel, VQAItem, item_messages

FRESH = 3 * 10**9  # image seeds far from the ones used in training
Case = tuple[str, str, str]  # (shape, colour, word)


def fresh_cases(n: int = 12, seed: int = 7) -> list[Case]:
    """Every colour twice and every word (and no word) at least twice, shapes at random."""
    rng = random.Random(seed)
    words = ("", *WORDS)
    return [(rng.choice(SHAPES), list(COLORS)[i % len(COLORS)], words[i % len(words)]) for i in range(n)]


@pytest.fixture(scope="module")
def described(tiny_describer: VisionLanguageModel) -> list[tuple[Case, Generation]]:
    """Each fresh case with its answer, as the service asks: one batch through generate_each, greedy,
    VQA_MAX_NEW_TOKENS."""
    cases = fresh_cases()
    conversations = [
        item_messages(VQAItem(images=[draw_described(shape, color, word, FRESH + i, (112, 128, 144)[i % 3])],
                              question=DEFAULT_DESCRIBE_PROMPT))
        for i, (shape, color, word) in enumerate(cases)
    ]
    results = tiny_describer.generate_each(conversations)
    answers = [result for result in results if isinstance(result, Generation)]
    assert len(answers) == len(cases), results
    return list(zip(cases, answers, strict=True))


def parsed(answer: Generation) -> dict[str, Any]:
    obj = json.loads(answer.text)
    assert isinstance(obj, dict), answer.text
    return obj


def test_every_answer_is_the_describe_json(described: list[tuple[Case, Generation]]) -> None:
    for _, answer in described:
        assert answer.finish_reason == "stop", answer.text
        obj = parsed(answer)
        assert set(obj) == {"description", "visible_text", "tags"}, answer.text
        assert isinstance(obj["description"], str) and obj["description"], answer.text
        assert isinstance(obj["visible_text"], str), answer.text
        assert isinstance(obj["tags"], list) and all(isinstance(tag, str) for tag in obj["tags"]), answer.text


def test_the_colour_is_described(described: list[tuple[Case, Generation]]) -> None:
    right = [
        parsed(answer)["description"].startswith(COLOR_ZH[color]) and COLOR_ZH[color] in parsed(answer)["tags"]
        for (_, color, _), answer in described
    ]
    assert sum(right) >= 11, [(case, answer.text) for case, answer in described]


def test_the_drawn_word_is_the_visible_text(described: list[tuple[Case, Generation]]) -> None:
    right = [parsed(answer)["visible_text"] == word for (_, _, word), answer in described]
    assert sum(right) >= 11, [(case, answer.text) for case, answer in described]
    assert {word for _, _, word in fresh_cases()} == {"", *WORDS}  # every word and the empty case were asked
