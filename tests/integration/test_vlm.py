"""runners.vlm.VisionLanguageModel on the committed tiny Qwen2.5-VL (tests/fixtures/tiny_qwen, CPU only).

The tiny model was trained by tests/fixtures/make_tiny_qwen.py to answer questions about one coloured
shape (tests/shapes.py), so the answers asserted here are real: "What color is the shape?" -> "red".
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.make_tiny_qwen import COLOR_ZH, COLORS, SHAPES, draw_clip, draw_image
from helpers.video import write_clip
from helpers.vlm_calls import answer, answer_batch, build_inputs, chat_batch, generate, stream, torch_engine
from PIL import Image

from config import Settings, get_settings
from runners.vlm import Generation, VisionLanguageModel, VQAItem, item_messages, load_vlm, open_vlm
from runners.vlm.video import read_video

FRESH = 3 * 10**9  # image seeds far from the ones used in training


def fresh_cases(n: int, seed: int) -> list[tuple[str, str, Image.Image]]:
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        shape, color = rng.choice(SHAPES), list(COLORS)[i % len(COLORS)]
        sizes: list[int | tuple[int, int]] = [48, 64, 96, (120, 72), (72, 140), 160]
        size = rng.choice(sizes)
        cases.append((shape, color, draw_image(shape, color, size, FRESH + seed * 1000 + i)))
    return cases


@pytest.fixture(scope="module")
def vlm(tiny_qwen_dir: Path) -> Iterator[VisionLanguageModel]:
    """The model as the service loads it: VQA_MODEL=<folder>, from_settings(), default settings on CPU."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQA_MODEL", str(tiny_qwen_dir))
        mp.setenv("DEVICE", "cpu")
        for name in ("VQA_QUANTIZATION", "VQA_MIN_PIXELS", "VQA_MAX_PIXELS", "VQA_MAX_NEW_TOKENS",
                     "VQA_MAX_NEW_TOKENS_CAP", "VQA_VIDEO_FPS", "VQA_VIDEO_MAX_FRAMES"):
            mp.delenv(name, raising=False)
        get_settings.cache_clear()
        try:
            yield open_vlm()
        finally:
            get_settings.cache_clear()


def settings(folder: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, vqa_model=str(folder), device="cpu", **overrides)  # type: ignore[call-arg,arg-type]


def test_loads_from_settings_without_quantization_on_cpu(vlm: VisionLanguageModel, tiny_qwen_dir: Path) -> None:
    assert vlm.device == "cpu"
    assert vlm.model_id == str(tiny_qwen_dir)
    assert vlm.settings.vqa_quantization == "4bit"  # the default, which applies to CUDA only
    assert vlm.quantization == "none"
    assert not getattr(torch_engine(vlm).model, "is_loaded_in_4bit", False)


def test_answers_colour_questions_on_fresh_images(vlm: VisionLanguageModel) -> None:
    cases = fresh_cases(24, seed=1)
    english = answer_batch(vlm, [VQAItem(images=[img], question="What color is the shape?") for _, _, img in cases])
    assert sum(a == color for a, (_, color, _) in zip(english, cases, strict=True)) >= 22, english
    chinese = answer_batch(vlm, [VQAItem(images=[img], question="图形是什么颜色？") for _, _, img in cases])
    assert sum(a == COLOR_ZH[color] for a, (_, color, _) in zip(chinese, cases, strict=True)) >= 21, chinese
    shape, color, img = cases[0]
    assert answer(vlm, img, "What colour is the shape?") == color


def test_batch_equals_each_item_alone(vlm: VisionLanguageModel) -> None:
    cases = fresh_cases(5, seed=2)
    items = [
        VQAItem(images=[cases[0][2]], question="What color is the shape?"),
        VQAItem(images=[cases[1][2]], question="Describe the image."),
        VQAItem(images=[cases[2][2]], question="这个图形是什么颜色？"),
        VQAItem(images=[draw_image("square", "blue", (150, 90), FRESH + 7)], question="What shape is in the image?"),
        VQAItem(video=draw_clip("circle", "green", 3, 64, FRESH + 8), question="What color is the shape in the video?"),
        VQAItem(images=[cases[3][2], cases[4][2]], question="What color is the shape?", max_new_tokens=3),
    ]
    grids = build_inputs(vlm, [item_messages(i) for i in items])["image_grid_thw"]
    assert len({tuple(int(x) for x in grid) for grid in grids}) > 1  # different numbers of visual tokens in one batch
    batched = answer_batch(vlm, items)
    alone = [answer_batch(vlm, [item])[0] for item in items]
    assert batched == alone
    assert batched[0] == cases[0][1]
    assert batched[1].startswith(f"A {cases[1][1]} ") and batched[1].endswith(" on a light background.")
    assert batched[2] == COLOR_ZH[cases[2][1]]
    assert batched[3] in SHAPES
    assert batched[4] == "green"


def test_max_new_tokens_is_respected_and_capped(vlm: VisionLanguageModel) -> None:
    shape, color, img = fresh_cases(1, seed=3)[0]
    full = generate(vlm, [item_messages(VQAItem(images=[img], question="Describe the image."))])[0]
    assert full.text.startswith(f"A {color} ") and full.text.endswith(" on a light background.")
    assert full.finish_reason == "stop" and full.completion_tokens > 4
    items = [VQAItem(images=[img], question="Describe the image.", max_new_tokens=n) for n in (1, 3, None)]
    cut = answer_batch(vlm, items)
    assert [completion for _, completion in vlm.token_counts] == [1, 3, full.completion_tokens]
    assert cut[2] == full.text and full.text.startswith(cut[1]) and cut[1].startswith(cut[0]) and cut[0] != cut[1]
    assert generate(vlm, [item_messages(items[1])], 3)[0] == Generation(cut[1], full.prompt_tokens, 3, "length")
    assert vlm.inputs.new_token_limit(None) == vlm.settings.vqa_max_new_tokens == 512
    assert vlm.inputs.new_token_limit(10**9) == vlm.settings.vqa_max_new_tokens_cap
    with pytest.raises(ValueError):
        vlm.inputs.new_token_limit(0)


def test_stream_joins_to_the_answer(vlm: VisionLanguageModel) -> None:
    shape, color, img = fresh_cases(1, seed=4)[0]
    for question in ("Describe the image.", "图形是什么颜色？"):
        item = VQAItem(images=[img], question=question)
        pieces = list(stream(vlm, item))
        assert "".join(pieces) == answer_batch(vlm, [item])[0]
    long_pieces = list(stream(vlm, VQAItem(images=[img], question="Describe the image.")))
    assert len(long_pieces) > 2
    assert vlm.token_counts[0][1] > 4
    limited = list(stream(vlm, VQAItem(images=[img], question="Describe the image.", max_new_tokens=2)))
    assert "".join(limited) == answer_batch(vlm, [VQAItem(images=[img], question="Describe the image.",
                                                         max_new_tokens=2)])[0]


def test_concurrent_calls_match_sequential_ones(vlm: VisionLanguageModel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cases = fresh_cases(6, seed=10)
    items = [VQAItem(images=[img], question=q) for (_, _, img), q in
             zip(cases, ["What color is the shape?", "图形是什么颜色？", "Describe the image."] * 2, strict=True)]
    calls: list[Callable[[], object]] = [
        lambda: answer_batch(vlm, items[:3]), lambda: answer_batch(vlm, items[3:]),
        lambda: "".join(stream(vlm, items[2])),
    ]
    sequential = [call() for call in calls]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(call) for call in calls]
        assert [f.result(timeout=60) for f in futures] == sequential


def test_stream_stops_when_abandoned(vlm: VisionLanguageModel) -> None:
    img = fresh_cases(1, seed=5)[0][2]
    pieces = stream(vlm, VQAItem(images=[img], question="Describe the image."))
    next(pieces)
    pieces.close()  # the generation thread stops and releases the model
    assert answer(vlm, img, "What color is the shape?") in COLORS


def test_four_bit_on_cpu_loads_and_generates(tiny_qwen_dir: Path) -> None:
    import bitsandbytes as bnb

    model = load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir), quantization="4bit")
    assert model.quantization == "4bit"
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in torch_engine(model).model.modules())
    cases = fresh_cases(12, seed=6)
    answers = answer_batch(model, [VQAItem(images=[img], question="What color is the shape?") for _, _, img in cases])
    assert sum(a == color for a, (_, color, _) in zip(answers, cases, strict=True)) >= 9, answers


def test_video_from_frames(vlm: VisionLanguageModel) -> None:
    colors = list(COLORS)
    items = [
        VQAItem(video=draw_clip(SHAPES[i % 3], color, 2 + i % 5, 64 + 8 * i, FRESH + 100 + i),
                question="What color is the shape in the video?")
        for i, color in enumerate(colors)
    ]
    assert answer_batch(vlm, items) == colors
    # More frames than VQA_VIDEO_MAX_FRAMES are subsampled to that many.
    long_clip = VQAItem(video=draw_clip("square", "red", 40, 64, FRESH + 200), question="图形是什么颜色？")
    inputs = build_inputs(vlm, [item_messages(long_clip)])
    assert int(inputs["video_grid_thw"][0][0]) == vlm.settings.vqa_video_max_frames // 2  # 2 frames per grid step
    assert answer_batch(vlm, [long_clip]) == ["红色"]


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".webm", "libvpx-vp9")])
def test_video_from_file(vlm: VisionLanguageModel, tmp_path: Path, suffix: str, codec: str) -> None:
    frames = draw_clip("triangle", "purple", 30, 96, FRESH + 300)  # 3 s at 10 fps
    path = write_clip(tmp_path / f"clip{suffix}", frames, fps=10, codec=codec)
    sampled, sample_fps = read_video(path, fps=1.0, max_frames=16)
    assert len(sampled) == 4  # 1 fps over 3 s, raised to qwen-vl-utils' minimum of 4
    assert sample_fps == pytest.approx(4 / 30 * 10, rel=0.05)
    assert len(read_video(path, fps=5.0, max_frames=6)[0]) == 6
    assert answer_batch(vlm, [VQAItem(video=path, question="What color is the shape in the video?")]) == ["purple"]
    chat = [{"role": "user", "content": [{"type": "video", "video": f"file://{path}"},
                                         {"type": "text", "text": "图形是什么颜色？"}]}]
    assert chat_batch(vlm, [chat]) == ["紫色"]


def test_video_file_errors(vlm: VisionLanguageModel, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        answer_batch(vlm, [VQAItem(video=tmp_path / "missing.mp4", question="What color is the shape?")])
    with pytest.raises(ValueError):
        read_video("https://example.com/a.mp4", fps=1.0, max_frames=4)


def image_tokens(model: VisionLanguageModel, image: Image.Image) -> int:
    inputs = build_inputs(model, [item_messages(VQAItem(images=[image], question="What color is the shape?"))])
    return int((inputs["input_ids"] == model.inputs.processor.image_token_id).sum())


def test_min_max_pixels_bound_visual_tokens(vlm: VisionLanguageModel, tiny_qwen_dir: Path) -> None:
    big, small = draw_image("circle", "orange", 224, FRESH + 400), draw_image("circle", "orange", 28, FRESH + 401)
    # The saved processor config: 56x56 .. 112x112 pixels, i.e. 4 .. 16 tokens of 28x28 pixels.
    assert image_tokens(vlm, big) == 16
    assert image_tokens(vlm, small) == 4
    bounded = load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir, vqa_min_pixels=784, vqa_max_pixels=3136))
    assert bounded.inputs.pixel_bounds("image") == (28 * 28, 56 * 56)
    assert image_tokens(bounded, big) == 4
    assert image_tokens(bounded, small) == 1
    assert answer(bounded, big, "What color is the shape?") == "orange"
    wide = load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir, vqa_min_pixels=12544, vqa_max_pixels=12544))
    assert image_tokens(wide, small) == 16


def test_vqa_max_pixels_caps_the_models_own_bound_and_zero_restores_it(tiny_qwen_dir: Path) -> None:
    """The default budget (1280*28*28, Qwen's suggestion for photos) caps the processor's own maximum and
    never raises it (the tiny model's own is 112x112); a lower budget wins; 0 is the model's own bound."""
    assert Settings(_env_file=None).vqa_max_pixels == 1280 * 28 * 28  # type: ignore[call-arg]
    default = load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir))
    assert default.inputs.pixel_bounds("image") == (56 * 56, 112 * 112)
    lower = load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir, vqa_max_pixels=56 * 56))
    assert lower.inputs.pixel_bounds("image") == (56 * 56, 56 * 56) and lower.inputs.pixel_bounds("video")[1] == 56 * 56
    big = draw_image("circle", "orange", 224, FRESH + 402)
    assert image_tokens(lower, big) == 4 < image_tokens(default, big) == 16
    own = load_vlm(tiny_qwen_dir, settings(tiny_qwen_dir, vqa_max_pixels=0))
    assert own.inputs.pixel_bounds("image") == (56 * 56, 112 * 112)


def test_multi_turn_chat(vlm: VisionLanguageModel) -> None:
    (s1, c1, img1), (s2, c2, img2) = fresh_cases(2, seed=7)
    first: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "image", "image": img1},
                                          {"type": "text", "text": "What color is the shape?"}]}]
    second: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "image", "image": img2},
                                           {"type": "text", "text": "图形是什么颜色？"}]}]
    answers = chat_batch(vlm, [first, second])
    assert answers == [c1, COLOR_ZH[c2]]
    follow_up: list[dict[str, Any]] = [
        *first,
        {"role": "assistant", "content": answers[0]},
        {"role": "user", "content": [{"type": "text", "text": "What shape is it?"}]},
    ]
    follow_up_zh: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful assistant."},
        *second,
        {"role": "assistant", "content": [{"type": "text", "text": answers[1]}]},
        {"role": "user", "content": "What color is the shape?"},
    ]
    shape_answer, colour_answer = chat_batch(vlm, [follow_up, follow_up_zh])
    assert shape_answer in SHAPES  # the tiny model tells shapes apart less reliably than colours
    assert colour_answer == c2
    assert [g.prompt_tokens > 20 for g in generate(vlm, [follow_up])] == [True]


def test_sampling_with_temperature_runs(vlm: VisionLanguageModel) -> None:
    img = fresh_cases(1, seed=8)[0][2]
    chat = [{"role": "user", "content": [{"type": "image", "image": img},
                                         {"type": "text", "text": "Describe the image."}]}]
    texts = chat_batch(vlm, [chat, chat], max_new_tokens=6, temperature=1.5, top_p=0.9)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert all(completion <= 6 for _, completion in vlm.token_counts)


def test_images_must_be_decoded_by_the_caller(tiny_vlm: VisionLanguageModel) -> None:
    for image in ("https://example.com/a.png", "/etc/hostname", {"url": "data:image/png;base64,AAAA"}):
        chat = [{"role": "user", "content": [{"type": "image_url", "image_url": image},
                                             {"type": "text", "text": "What color is the shape?"}]}]
        with pytest.raises(TypeError):
            chat_batch(tiny_vlm, [chat])
    assert generate(tiny_vlm, []) == [] and answer_batch(tiny_vlm, []) == []
    img = fresh_cases(1, seed=9)[0]
    assert answer(tiny_vlm, img[2], "What color is the shape?") == img[1]
