"""runners/vlm/describe.py: what a description answer becomes (parse_answer), `described_by`, and the Describer over
the real tiny VLM (a batch with a photo the model refuses). The indexer's describe stage is
tests/unit/test_describe_stage.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from shapes import draw_shape

from config import DEFAULT_DESCRIBE_PROMPT, Settings
from runners.vlm import VisionLanguageModel, open_describer
from runners.vlm.describe import Describer, Description, described_by_of, describer_id, parse_answer

# ---------------------------------------------------------------- parse_answer: JSON answers


def test_a_json_answer_fills_all_three_fields() -> None:
    got = parse_answer('{"description": "红色的圆形", "visible_text": "发票", "tags": ["红色", "圆形"]}')
    assert got == Description(description="红色的圆形", visible_text="发票", tags=["红色", "圆形"])


@pytest.mark.parametrize("answer", [
    '  \n{"description": "一只小狗", "visible_text": "", "tags": ["狗"]}\n\n',
    '```json\n{"description": "一只小狗", "visible_text": "", "tags": ["狗"]}\n```',
    '```JSON\n{"description": "一只小狗", "visible_text": "", "tags": ["狗"]}```',
    '```\n{"description": "一只小狗", "visible_text": "", "tags": ["狗"]}\n```\n',
    ' ```json {"description": "一只小狗", "visible_text": "", "tags": ["狗"]} ``` ',
])
def test_whitespace_and_a_code_fence_around_the_json_are_allowed(answer: str) -> None:
    assert parse_answer(answer) == Description(description="一只小狗", visible_text="", tags=["狗"])


def test_missing_fields_are_empty_and_unknown_ones_ignored() -> None:
    assert parse_answer('{"visible_text": "STOP"}') == Description(description="", visible_text="STOP", tags=[])
    assert parse_answer('{"tags": ["海"], "mood": "calm"}') == Description(description="", tags=["海"])
    assert parse_answer('{"description": null, "visible_text": null, "tags": null, "x": 1}') == Description("")


@pytest.mark.parametrize(("tags", "expected"), [
    ('"红色, 圆形，发票、收据;海"', ["红色", "圆形", "发票", "收据", "海"]),  # one string: split at commas
    ('["a", " b ", "", "a", 3, 2.5, true]', ["a", "b", "3", "2.5", "True"]),  # trimmed, deduplicated, as text
    ('[["x", "y"], {"k": "v"}]', ["x y", '{"k": "v"}']),
    ('7', ["7"]),
    ('""', []),
    ('[]', []),
])
def test_tags_become_a_list_of_distinct_strings(tags: str, expected: list[str]) -> None:
    assert parse_answer(f'{{"description": "d", "tags": {tags}}}').tags == expected


def test_a_looping_tag_list_is_cut() -> None:
    many = ", ".join(f'"t{i}"' for i in range(500))
    assert len(parse_answer(f'{{"description": "d", "tags": [{many}]}}').tags) == 32


def test_non_string_description_and_visible_text_become_text() -> None:
    got = parse_answer('{"description": ["一只猫", "在沙发上"], "visible_text": 2024, "tags": []}')
    assert got == Description(description="一只猫 在沙发上", visible_text="2024", tags=[])


# ---------------------------------------------------------------- parse_answer: anything else is the description


@pytest.mark.parametrize("answer", [
    "红色",
    "A red circle on a grey background.",
    '{"description": "cut off by the token limit", "tags": ["a"',  # invalid JSON
    '["a", "list"]',  # JSON, not an object
    '"just a string"',
    "42",
    '{"caption": "an object without any of the fields"}',
    'Here it is: {"description": "d"}',  # text around the JSON is not a JSON answer
])
def test_any_other_answer_is_stored_whole_as_the_description(answer: str) -> None:
    assert parse_answer(answer) == Description(description=answer.strip(), visible_text="", tags=[])


def test_an_answer_is_stored_whole_but_trimmed() -> None:
    assert parse_answer("  红色的圆形\n") == Description("红色的圆形")


def test_payload_fields() -> None:
    got = Description("d", "v", ["t"]).payload("m#abc")
    assert got == {"description": "d", "visible_text": "v", "tags": ["t"], "described_by": "m#abc"}


# ---------------------------------------------------------------- described_by


def test_described_by_is_the_model_and_a_short_hash_of_the_prompt() -> None:
    one = describer_id("Qwen/Qwen2.5-VL-3B-Instruct", DEFAULT_DESCRIBE_PROMPT)
    model, digest = one.split("#")
    assert model == "Qwen/Qwen2.5-VL-3B-Instruct" and len(digest) == 12 and int(digest, 16) >= 0
    assert describer_id("Qwen/Qwen2.5-VL-3B-Instruct", DEFAULT_DESCRIBE_PROMPT) == one  # stable
    assert describer_id("Qwen/Qwen2.5-VL-7B-Instruct", DEFAULT_DESCRIBE_PROMPT) != one
    assert describer_id("Qwen/Qwen2.5-VL-3B-Instruct", DEFAULT_DESCRIBE_PROMPT + " ") != one


def test_described_by_is_known_from_the_settings_before_the_model_loads(tiny_qwen_dir: Path) -> None:
    settings = Settings(_env_file=None, vqa_model=str(tiny_qwen_dir), device="cpu", describe_prompt="p")  # type: ignore[call-arg]
    assert described_by_of(settings) == describer_id(str(tiny_qwen_dir), "p")
    describer = open_describer(settings)
    assert describer.described_by == described_by_of(settings)
    # Each photo is described once: the follow-up caches would only hold memory in the indexer.
    assert [cache["limit_bytes"] for cache in describer.vlm.caches().values()] == [0, 0]


# ---------------------------------------------------------------- the Describer on the real tiny VLM


def test_describes_a_batch_and_lists_the_photo_the_model_refuses(tiny_vlm: VisionLanguageModel) -> None:
    describer = Describer(tiny_vlm, DEFAULT_DESCRIBE_PROMPT, max_new_tokens=32)
    shapes = [draw_shape("circle", "red", seed=1), draw_shape("square", "blue", seed=2)]
    strip = Image.new("RGB", (1, 300), "white")  # over Qwen's 200:1 aspect limit
    got = describer.describe([shapes[0], strip, shapes[1]])
    alone = [describer.describe([image])[0] for image in shapes]
    # The tiny VQA model answers this prompt with a colour word, not JSON: stored whole as the description.
    assert got[0] == alone[0] and got[2] == alone[1]
    for answer in (got[0], got[2]):
        assert isinstance(answer, Description) and answer.description == "红色" and answer.tags == []
    assert isinstance(got[1], str) and "aspect ratio 300:1" in got[1]


def test_the_indexer_and_the_describer_import_neither_bentoml_nor_torch() -> None:
    """The indexer stays a plain program: BentoML never, torch only once a model is loaded."""
    import subprocess
    import sys

    code = ("import sys, indexer.__main__, indexer.describe_stage, runners.vlm.describe; "
            "print(sorted(m for m in ('bentoml', 'torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("describe_max", "vqa_max", "decode", "shrink"), [
    (0, 1003520, 1003520, 0), (250880, 1003520, 250880, 250880), (2000000, 1003520, 1003520, 0),
    (1003520, 1003520, 1003520, 0), (250880, 0, 250880, 250880), (0, 0, 0, 0)])
def test_the_describe_pixel_budget_is_the_smaller_bound_and_only_describe_max_pixels_shrinks(
        describe_max: int, vqa_max: int, decode: int, shrink: int) -> None:
    """Photos decode at the smaller bound; the stage resizes only for a DESCRIBE_MAX_PIXELS below VQA_MAX_PIXELS
    (the model's processor applies VQA_MAX_PIXELS itself, in one resize, as for /vqa)."""
    from indexer.describe_stage import pixel_budget
    from indexer.payload_stage import PixelBudget

    assert pixel_budget(describe_max, vqa_max) == PixelBudget(decode=decode, shrink=shrink)


def test_a_photo_over_the_describe_budget_is_shrunk_keeping_its_shape(tmp_path: Path) -> None:
    """DESCRIBE_MAX_PIXELS: the stage hands the model a 1600x1200 JPEG as ~40,000 pixels, 4:3 still; a photo
    under the budget is handed over as it is."""
    from core.library import Library
    from indexer.decode import content_hash
    from indexer.describe_stage import pixel_budget
    from indexer.payload_stage import PixelBudget, SameContent, decode_photo

    big = tmp_path / "big.jpg"
    draw_shape("circle", "red", 1600).resize((1600, 1200)).save(big, quality=90)
    small = tmp_path / "small.png"
    draw_shape("circle", "red", 150).save(small)
    library = Library(tmp_path)

    def decoded(path: Path, budget: PixelBudget) -> Image.Image:
        image = decode_photo(library, SameContent(content_hash(path.read_bytes()), ["1"], [path.name]), budget)
        assert isinstance(image, Image.Image), image
        return image

    shrunk = decoded(big, pixel_budget(40_000, 1003520))
    assert 39_000 <= shrunk.width * shrunk.height <= 40_000
    assert abs(shrunk.width / shrunk.height - 4 / 3) < 0.02
    assert decoded(small, pixel_budget(40_000, 1003520)).size == (150, 150)
    assert decoded(big, PixelBudget()).size == (1600, 1200)
    # The default budget (VQA_MAX_PIXELS only) hands the photo over as decoded: the processor resizes it once.
    assert decoded(big, pixel_budget(0, 1003520)).size == (1600, 1200)
