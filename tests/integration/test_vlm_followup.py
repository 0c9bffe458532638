"""Follow-up questions on PyTorch (runners/vlm/torch_reuse.py) with the trained tiny Qwen2.5-VL: a photo's vision
encoding and prompt prefix are reused by every later question, chat turn or stream about it, never for another
photo (same size, other colour) nor for the same photo at another pixel budget, answers equal those with the
caches off, and a budget too small for the traffic evicts without failing a request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.make_tiny_qwen import COLORS, draw_image
from helpers.vlm_calls import answer, answer_batch, chat_batch, stream_chat
from PIL import Image
from prometheus_client import REGISTRY

from config import Settings
from runners.vlm import VisionLanguageModel, VQAItem, item_messages, load_vlm
from runners.vlm.inputs import VlmInputs
from runners.vlm.torch_runtime import TorchRuntime

FRESH = 5 * 10**9  # image seeds far from the ones used in training
COLOR_Q, DESCRIBE_Q = "What color is the shape?", "Describe the image."


def settings(folder: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, vqa_model=str(folder), device="cpu", **overrides)  # type: ignore[call-arg,arg-type]


def runtime(vlm: VisionLanguageModel) -> TorchRuntime:
    assert isinstance(vlm.runtime, TorchRuntime)
    return vlm.runtime


def counted(cache: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("mms_vqa_cache_total", {"cache": cache, "outcome": outcome}) or 0.0


@pytest.fixture
def cached(tiny_qwen_dir: Path) -> Iterator[VisionLanguageModel]:
    """A fresh model with both caches on (the defaults), so each test sees its own hits and misses."""
    yield load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir))


@pytest.fixture(scope="module")
def uncached(tiny_qwen_dir: Path) -> VisionLanguageModel:
    return load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir, vqa_vision_cache_mb=0, vqa_prefix_cache_mb=0))


def same_size_photos() -> list[tuple[str, Image.Image]]:
    """One circle per colour, all 96x96: same grid, same placeholder tokens, different pixels."""
    return [(color, draw_image("circle", color, 96, FRESH + i)) for i, color in enumerate(COLORS)]


def test_same_size_photos_of_other_colours_get_their_own_answers_with_the_cache_warm(
        cached: VisionLanguageModel) -> None:
    photos = same_size_photos()
    assert [answer(cached, image, COLOR_Q) for _, image in photos] == [color for color, _ in photos]
    caches = cached.caches()
    assert caches["vision"]["entries"] == len(photos) and caches["prefix"]["entries"] == len(photos)
    hits = counted("prefix", "hit")
    # Warm: asked again (reversed, so each follows another photo's question) every answer is still its own.
    assert [answer(cached, image, COLOR_Q) for _, image in reversed(photos)] == [c for c, _ in reversed(photos)]
    assert counted("prefix", "hit") - hits == len(photos)
    after = cached.caches()
    assert after["prefix"]["hits"] == len(photos) and after["vision"]["entries"] == len(photos)  # nothing shared
    assert after["vision"]["hits"] == 0  # a prefix hit holds its images already: not even the cache is read
    # Batched, the questions reuse the vision encodings only (the prefix needs a batch of one): still their own.
    assert answer_batch(cached, [VQAItem(images=[image], question=COLOR_Q) for _, image in photos]) == \
        [color for color, _ in photos]
    assert cached.caches()["vision"]["hits"] == len(photos) and cached.caches()["vision"]["entries"] == len(photos)


def test_answers_with_the_caches_equal_answers_without(cached: VisionLanguageModel,
                                                       uncached: VisionLanguageModel) -> None:
    drawn: list[tuple[str, str, int | tuple[int, int]]] = [("circle", "red", 96), ("square", "blue", (120, 72)),
                                                         ("triangle", "green", 160)]
    photos = [draw_image(shape, color, size, FRESH + 100 + i) for i, (shape, color, size) in enumerate(drawn)]
    for question in (COLOR_Q, DESCRIBE_Q, COLOR_Q):  # the second and third questions are follow-ups
        items = [VQAItem(images=[photo], question=question) for photo in photos]
        assert [answer(cached, p, question) for p in photos] == [answer(uncached, p, question) for p in photos]
        assert answer_batch(cached, items) == answer_batch(uncached, items)  # a batch: vision cache only
    two = [VQAItem(images=photos[:2], question=DESCRIBE_Q)]
    assert answer_batch(cached, two) == answer_batch(uncached, two)
    # Follow-ups alone hit the prefix (2 questions x 3 photos); batches and the two-photo question the encodings.
    assert cached.caches()["prefix"]["hits"] == 6 and cached.caches()["vision"]["hits"] == 3 * 3 + 2


def test_a_follow_up_after_a_photo_of_another_size_keeps_its_own_positions(cached: VisionLanguageModel,
                                                                          uncached: VisionLanguageModel) -> None:
    photos = [draw_image("square", color, size, FRESH + 400 + i) for i, (color, size) in enumerate(
        [("red", 56), ("blue", 224), ("green", 112)])]
    for photo in [*photos, *photos[::-1], *photos]:  # each one after a photo of another size
        assert answer(cached, photo, DESCRIBE_Q) == answer(uncached, photo, DESCRIBE_Q)
        # The tiny model's answers barely depend on positions: the offset it generated with is checked itself
        # (the uncached model computed it from this prompt, the cached one took it from the prefix's entry).
        ours, theirs = runtime(cached).model.model.rope_deltas, runtime(uncached).model.model.rope_deltas
        assert ours.tolist() == theirs.tolist()
    assert cached.caches()["prefix"]["hits"] == 6


def test_a_chat_that_resends_its_photo_reuses_the_prefix_and_answers_as_without(
        cached: VisionLanguageModel, uncached: VisionLanguageModel) -> None:
    photo = draw_image("square", "yellow", 112, FRESH + 200)
    turn = item_messages(VQAItem(images=[photo], question=COLOR_Q))
    first = chat_batch(cached, [turn])[0]
    assert first == chat_batch(uncached, [turn])[0] == "yellow"
    follow_up = [*turn, {"role": "assistant", "content": first},
                 {"role": "user", "content": [{"type": "text", "text": DESCRIBE_Q}]}]
    hits = cached.caches()["prefix"]["hits"]
    assert chat_batch(cached, [follow_up]) == chat_batch(uncached, [follow_up])
    assert cached.caches()["prefix"]["hits"] == hits + 1
    streamed = "".join(stream_chat(cached, follow_up))  # /vqa/stream goes through the same caches
    assert streamed == chat_batch(uncached, [follow_up])[0]
    assert cached.caches()["prefix"]["hits"] == hits + 2


def test_the_same_photo_at_two_pixel_budgets_never_shares_an_entry(cached: VisionLanguageModel,
                                                                  tiny_qwen_dir: Path) -> None:
    photo = draw_image("circle", "purple", 224, FRESH + 300)
    small = settings(tiny_qwen_dir, vqa_max_pixels=56 * 56)
    # The same runtime (and so the same caches) behind a second pixel budget.
    at_small = VisionLanguageModel(VlmInputs.load(tiny_qwen_dir, small), cached.runtime, cached.model_id)
    assert cached.prepare(item_messages(VQAItem(images=[photo], question=COLOR_Q))).images[0].size != \
        at_small.prepare(item_messages(VQAItem(images=[photo], question=COLOR_Q))).images[0].size
    big_answer, small_answer = answer(cached, photo, DESCRIBE_Q), answer(at_small, photo, DESCRIBE_Q)
    caches = cached.caches()
    assert caches["vision"]["entries"] == 2 and caches["vision"]["hits"] == 0
    assert caches["prefix"]["entries"] == 2 and caches["prefix"]["hits"] == 0
    uncached_small = VisionLanguageModel(
        VlmInputs.load(tiny_qwen_dir, small),
        load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir, vqa_vision_cache_mb=0, vqa_prefix_cache_mb=0)).runtime,
        cached.model_id)
    assert answer(at_small, photo, DESCRIBE_Q) == small_answer == answer(uncached_small, photo, DESCRIBE_Q)
    assert answer(cached, photo, DESCRIBE_Q) == big_answer
    assert cached.caches()["prefix"]["hits"] == 2 and cached.caches()["vision"]["entries"] == 2


def test_a_budget_for_one_photo_evicts_and_never_fails_a_request(cached: VisionLanguageModel) -> None:
    photos = same_size_photos()
    answer(cached, photos[0][1], COLOR_Q)
    reuse = runtime(cached).reuse
    one_image, one_prefix = reuse.vision.info()["bytes"], reuse.prefixes.info()["bytes"]
    reuse.vision.limit, reuse.prefixes.limit = one_image, one_prefix  # room for one photo's entries only
    evictions = counted("vision", "eviction")
    for _ in range(2):
        assert [answer(cached, image, COLOR_Q) for _, image in photos] == [color for color, _ in photos]
        for cache in cached.caches().values():
            assert cache["entries"] == 1 and cache["bytes"] <= cache["limit_bytes"]
    assert cached.caches()["vision"]["evictions"] == 2 * len(photos) - 1
    assert counted("vision", "eviction") - evictions == 2 * len(photos) - 1
    reuse.vision.limit = reuse.prefixes.limit = 1  # smaller than any entry: nothing is kept, answers still come
    assert answer(cached, photos[1][1], COLOR_Q) == photos[1][0]
    assert answer(cached, photos[1][1], COLOR_Q) == photos[1][0]
