"""ClipEncoder with the committed tiny Chinese-CLIP: loading from settings, the model's own processor,
output contract (shape, dtype, unit norm), odd inputs, and real text->image ranking."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shapes import CLASSES, caption, draw_shape

from config import Settings, get_settings
from runners.clip import ClipEncoder, open_clip

DIM = 32  # the trained fixture's projection_dim
FRESH_SEED = 7_000_000  # training drew seeds 0..47, make_tiny_clip's held-out set 1_000_000+


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Iterator[ClipEncoder]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIP_MODEL", str(tiny_clip_dir))
        mp.setenv("DEVICE", "cpu")
        get_settings.cache_clear()
        yield open_clip()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def fresh_images() -> tuple[list[Image.Image], list[tuple[str, str]]]:
    """4 never-seen images of every class, at the sizes a library holds."""
    images, labels = [], []
    for shape, color in CLASSES:
        for i in range(4):
            images.append(draw_shape(shape, color, size=(64, 80, 96, 128)[i], seed=FRESH_SEED + i))
            labels.append((shape, color))
    return images, labels


def test_from_settings_uses_clip_model_folder(tiny_clip_dir: Path, settings_env: Callable[..., Settings]) -> None:
    settings = settings_env(CLIP_MODEL=tiny_clip_dir, DEVICE="cpu", MODEL_CACHE_DIR=None)
    assert settings.clip_model == str(tiny_clip_dir)
    encoder = open_clip()
    assert encoder.dim == DIM and encoder.device == "cpu"
    assert encoder.model_id == str(tiny_clip_dir.resolve())


def test_processor_is_the_models_own(encoder: ClipEncoder, tiny_clip_dir: Path) -> None:
    saved = json.loads((tiny_clip_dir / "processor_config.json").read_text())["image_processor"]
    image_processor = encoder.processor.image_processor
    assert image_processor.crop_size == saved["crop_size"] == {"height": 64, "width": 64}
    assert image_processor.size == saved["size"]
    assert list(image_processor.image_mean) == pytest.approx(saved["image_mean"])
    assert list(image_processor.image_std) == pytest.approx(saved["image_std"])
    assert list(image_processor.image_mean) != pytest.approx([0.485, 0.456, 0.406])  # not ImageNet's
    assert list(image_processor.image_mean) != pytest.approx([0.5, 0.5, 0.5])
    pixels = encoder.processor(images=[Image.new("RGB", (300, 120))], return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 64, 64) == (1, 3, encoder.model.config.vision_config.image_size, 64)

    tokenizer = encoder.processor.tokenizer
    assert len(tokenizer) == encoder.model.config.text_config.vocab_size
    ids = tokenizer([caption(s, c) for s, c in CLASSES] + ["a red circle"])["input_ids"]
    assert all(tokenizer.unk_token_id not in row for row in ids), "saved vocabulary not loaded: [UNK] tokens"


def test_output_shapes_dtypes_and_unit_norm(encoder: ClipEncoder) -> None:
    images = encoder.encode_images([draw_shape("circle", "red", seed=s) for s in range(3)])
    texts = encoder.encode_texts(["红色的圆形", "a blue square", "一只猫"])
    for vectors in (images, texts):
        assert vectors.shape == (3, DIM) and vectors.dtype == np.float32
        assert np.all(np.isfinite(vectors))
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_inputs(encoder: ClipEncoder) -> None:
    for vectors in (encoder.encode_images([]), encoder.encode_texts([])):
        assert vectors.shape == (0, DIM) and vectors.dtype == np.float32


def test_batched_equals_one_by_one(encoder: ClipEncoder) -> None:
    texts = ["蓝色", "图片里有一个紫色的三角形", "a photo of a yellow square", "橙"]
    batched = encoder.encode_texts(texts)
    single = np.concatenate([encoder.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)  # padding is masked
    images = [draw_shape("square", "green", size=size, seed=3) for size in (64, 96)]
    np.testing.assert_allclose(
        encoder.encode_images(images), np.concatenate([encoder.encode_images([im]) for im in images]), atol=1e-5
    )


def test_non_rgb_and_odd_sized_images(encoder: ClipEncoder) -> None:
    base = draw_shape("triangle", "blue", size=80, seed=42)
    variants = {
        "RGBA": base.convert("RGBA"),
        "L": base.convert("L"),
        "P": base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "CMYK": base.convert("CMYK"),
        "LA": base.convert("LA"),
        "I": base.convert("I"),
        "1x1": Image.new("RGB", (1, 1), (200, 30, 30)),
        "wide": base.resize((240, 60)),
    }
    reference = encoder.encode_images([base])[0]
    vectors = encoder.encode_images(list(variants.values()))
    assert vectors.shape == (len(variants), DIM)
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = dict(zip(variants, vectors @ reference, strict=True))
    assert similarity["RGBA"] == pytest.approx(1.0, abs=1e-5)  # opaque alpha is dropped
    assert similarity["CMYK"] > 0.99
    assert similarity["P"] > 0.95


def test_long_and_odd_texts(encoder: ClipEncoder) -> None:
    texts = ["红色的圆形" * 200, "", "   ", "🙂 emoji ☃", "RED CIRCLE"]
    vectors = encoder.encode_texts(texts)
    assert vectors.shape == (len(texts), DIM) and np.all(np.isfinite(vectors))
    # Lower-casing tokenizer: the upper-case query means the same thing.
    np.testing.assert_allclose(vectors[4], encoder.encode_texts(["red circle"])[0], atol=1e-5)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_text_to_image_ranking(
    encoder: ClipEncoder, fresh_images: tuple[list[Image.Image], list[tuple[str, str]]], lang: str
) -> None:
    images, labels = fresh_images
    image_vectors = encoder.encode_images(images)
    text_vectors = encoder.encode_texts([caption(shape, color, lang) for shape, color in CLASSES])
    top1 = [labels[i] for i in (text_vectors @ image_vectors.T).argmax(axis=1)]
    exact = sum(got == want for got, want in zip(top1, CLASSES, strict=True))
    colour = sum(got[1] == want[1] for got, want in zip(top1, CLASSES, strict=True))
    assert colour == len(CLASSES), list(zip(CLASSES, top1, strict=True))
    assert exact >= len(CLASSES) - 1, list(zip(CLASSES, top1, strict=True))  # trained: 18/18


def test_image_to_text_classification(
    encoder: ClipEncoder, fresh_images: tuple[list[Image.Image], list[tuple[str, str]]]
) -> None:
    images, labels = fresh_images
    text_vectors = encoder.encode_texts([caption(shape, color) for shape, color in CLASSES])
    predicted = [CLASSES[i] for i in (encoder.encode_images(images) @ text_vectors.T).argmax(axis=1)]
    accuracy = np.mean([p == t for p, t in zip(predicted, labels, strict=True)])
    assert accuracy >= 0.9


def test_random_clip_fixture_loads_with_its_own_dimension(random_clip_dir: Path) -> None:
    encoder = ClipEncoder(str(random_clip_dir), "cpu", model_id="random")
    assert encoder.dim == 48 and encoder.model_id == "random"
    vectors = encoder.encode_texts(["红色的圆形"])
    assert vectors.shape == (1, 48)
    assert encoder.encode_images([draw_shape("circle", "red")]).shape == (1, 48)
