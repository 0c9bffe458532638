"""Image fault catalogue, plain modules: images of extreme shapes and modes through the one decoder
(core.images.load_image), CLIP's bounded view (clip_view), the aspect check VQA uses, per-item
isolation in CLIP's batches and the indexer's embed batch, and the memory all of that takes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from extreme_images import CASES, encoded
from PIL import Image
from qdrant_client import QdrantClient
from shapes import draw_shape

from core.images import BadImage, check_aspect, clip_view, decode_bytes, load_image
from indexer.pipeline import Indexer
from indexer.pipeline import IndexOptions as Options
from runners.clip import ClipEncoder, encode_isolated
from store.qdrant_server import ServerStore

DIM = 32


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder(str(tiny_clip_dir), "cpu", model_id="tiny")


@pytest.mark.parametrize("name", CASES)
def test_each_extreme_image_is_decoded_or_refused_with_its_reason(name: str) -> None:
    _, make, refusal = CASES[name]
    if refusal is not None:
        with pytest.raises(BadImage) as caught:
            load_image(make(), max_decode_mb=200)
        assert str(caught.value) == refusal
        return
    image, width, height = load_image(make(), max_decode_mb=200)
    assert image.mode == "RGB" and image.size == (width, height)
    view = clip_view(image)
    assert min(view.size) <= 896 and max(view.size) <= 10 * max(1, min(view.size))


def test_modes_come_out_as_the_picture_a_person_sees() -> None:
    palette, _, _ = load_image(CASES["palette-transparent"][1]())
    assert palette.getpixel((2, 2)) == (255, 255, 255)  # transparent: flattened on white
    assert palette.getpixel((40, 40)) == (0, 0, 255)
    gif, _, _ = load_image(CASES["animated-gif"][1]())
    assert gif.getpixel((5, 5)) == (255, 0, 0)  # the first frame
    grey, _, _ = load_image(CASES["16-bit"][1]())
    assert grey.getpixel((0, 0)) == (156, 156, 156)  # 40,000 of 65,535 -> 156 of 255
    cmyk, _, _ = load_image(CASES["cmyk"][1]())
    red, green, blue = cmyk.getpixel((10, 10))  # type: ignore[misc]
    assert red > 200 and green < 100 and blue < 100


@pytest.mark.parametrize(("mode", "per_pixel"), [("L", 5), ("RGB", 8), ("RGBA", 9), ("P", 10), ("I;16", 10),
                                                 ("I", 14), ("CMYK", 8), ("1", 5)])
def test_decode_bytes_counts_the_source_and_its_rgb_copy(mode: str, per_pixel: int) -> None:
    assert decode_bytes(mode, 1000, 500) == 500_000 * per_pixel


def test_a_jpeg_over_the_bound_decodes_at_a_reduced_scale_that_fits() -> None:
    jpeg = encoded(Image.radial_gradient("L").resize((2000, 1600)).convert("RGB"), "JPEG")
    full, _, _ = load_image(jpeg, max_decode_mb=100)
    assert full.size == (2000, 1600)
    halved, width, height = load_image(jpeg, max_decode_mb=20)  # 2000x1600 RGB needs 25 MB
    assert halved.size == (1000, 800) and (width, height) == (2000, 1600)
    eighth, _, _ = load_image(jpeg, max_decode_mb=0.5)
    assert eighth.size == (250, 200)
    with pytest.raises(BadImage, match=r"2000x1600 RGB needs 25 MB, over IMAGE_MAX_DECODE_MB=0.1$"):
        load_image(jpeg, max_decode_mb=0.1)


def test_the_setting_is_the_default_bound(settings_env: Any) -> None:
    png = encoded(Image.new("RGB", (1000, 1000)), "PNG")  # needs 8 MB
    settings_env(IMAGE_MAX_DECODE_MB="5")
    with pytest.raises(BadImage, match="IMAGE_MAX_DECODE_MB=5$"):
        load_image(png)
    settings_env(IMAGE_MAX_DECODE_MB="10")
    assert load_image(png)[0].size == (1000, 1000)


@pytest.mark.parametrize(("size", "view"), [
    ((1, 65_000), (1, 10)), ((65_000, 1), (10, 1)), ((3000, 2000), (1344, 896)), ((1200, 100), (1000, 100)),
    ((100, 80), (100, 80)), ((896, 8960), (896, 8960)),
])
def test_clip_view_crops_the_centre_past_10_to_1_and_brings_the_short_side_to_896(
        size: tuple[int, int], view: tuple[int, int]) -> None:
    assert clip_view(Image.new("RGB", size)).size == view


def test_clip_view_keeps_the_centre() -> None:
    image = Image.new("RGB", (1, 1000), (0, 0, 0))
    image.putpixel((0, 500), (255, 0, 0))
    assert clip_view(image).getpixel((0, 5)) == (255, 0, 0)


def test_clip_view_leaves_what_the_processor_sees_unchanged(encoder: ClipEncoder) -> None:
    """The processor resizes the short side and keeps the centre square: a wide image cropped to 10:1
    and a large one brought down to 896 px give it (almost) the same pixels and the same vector."""
    wide = draw_shape("circle", "red", size=128, seed=5).resize((1536, 128))
    large = draw_shape("square", "blue", size=128, seed=6).resize((2400, 2000), Image.Resampling.BICUBIC)
    for image in (wide, large):
        direct = encoder.processor(images=[image], return_tensors="np")["pixel_values"]
        bounded = encoder.processor(images=[clip_view(image)], return_tensors="np")["pixel_values"]
        assert np.abs(direct - bounded).mean() < 0.02
        vector = encoder.image_batch([image])[0]  # image_batch applies clip_view itself
        assert float(vector @ encoder.encode_images([clip_view(image)])[0]) > 0.999


@pytest.mark.parametrize(("size", "says"), [((250, 1), "aspect ratio 250:1 is over 200:1"),
                                            ((3, 700), "aspect ratio 233.3:1 is over 200:1")])
def test_check_aspect_names_the_ratio(size: tuple[int, int], says: str) -> None:
    with pytest.raises(BadImage, match=f"^{says}$"):
        check_aspect(Image.new("L", size), 200)
    check_aspect(Image.new("L", (200, 1)), 200)


def fake_encode(calls: list[int]) -> Any:
    def encode(items: list[Any]) -> np.ndarray:
        calls.append(len(items))
        if "bad" in items:
            raise ValueError("refused by the processor")
        if "down" in items:
            raise RuntimeError("CUDA error: device lost")
        return np.array([[float(len(item)), 1.0] for item in items], dtype=np.float32)
    return encode


def test_encode_isolated_answers_a_failing_item_alone_and_the_rest_as_if_alone() -> None:
    calls: list[int] = []
    vectors, reasons = encode_isolated(fake_encode(calls), ["a", "bad", "ccc"], 2)
    assert calls == [3, 1, 1, 1]
    assert reasons == [None, "ValueError: refused by the processor", None]
    assert vectors[0].tolist() == [1.0, 1.0] and vectors[2].tolist() == [3.0, 1.0]
    assert np.isnan(vectors[1]).all()
    alone, why = encode_isolated(fake_encode([]), ["bad"], 2)
    assert np.isnan(alone).all() and why == ["ValueError: refused by the processor"]


def test_an_error_no_input_causes_still_propagates() -> None:
    with pytest.raises(RuntimeError, match="device lost"):
        encode_isolated(fake_encode([]), ["a", "down"], 2)


def test_clip_encoder_isolates_images_and_texts(encoder: ClipEncoder) -> None:
    good = [draw_shape("circle", "red", seed=1), draw_shape("square", "blue", seed=2)]
    vectors, reasons = encoder.encode_images_each([good[0], Image.new("RGB", (0, 0)), good[1]])
    assert reasons[0] is None and reasons[2] is None and reasons[1] is not None
    assert np.isnan(vectors[1]).all()
    np.testing.assert_allclose(vectors[[0, 2]], encoder.encode_images(good), atol=1e-5)
    texts = encoder.encode_texts(["红色的圆形", None, "a blue square"])  # type: ignore[list-item]
    assert np.isnan(texts[1]).all()
    np.testing.assert_allclose(texts[[0, 2]], encoder.encode_texts(["红色的圆形", "a blue square"]), atol=1e-5)


class FailsOnGreen:
    """An encoder that raises for any batch holding a green image (as a processor might for one input)."""

    model_id = "fake"
    dim = 2

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        if any(image.getpixel((0, 0)) == (0, 255, 0) for image in images):
            raise ValueError("cannot encode green")
        return np.ones((len(images), 2), dtype=np.float32)


def test_the_indexer_lists_a_failing_image_and_writes_its_batch_mates(tmp_path: Path) -> None:
    for name, color in (("a.png", "red"), ("b.png", (0, 255, 0)), ("c.png", "blue")):
        Image.new("RGB", (20, 20), color).save(tmp_path / name)
    for name, (suffix, make, _) in CASES.items():
        (tmp_path / f"x-{name}{suffix}").write_bytes(make())
    store = ServerStore(QdrantClient(":memory:"), "images")
    store.ensure_collection("fake", 2)
    summary = Indexer(store, FailsOnGreen(), Options(batch_size=8, workers=2, progress=False)).run(tmp_path)
    failures = dict(summary.failures)
    assert failures.pop("b.png") == "cannot embed: ValueError: cannot encode green"
    assert failures == {f"x-{name}{suffix}": refusal for name, (suffix, _, refusal) in CASES.items()
                        if refusal is not None}
    written = {p["path"] for _, p in store.payloads()}
    assert {"a.png", "c.png", "x-1x65000.png", "x-65000x1.png", "x-cmyk.jpg"} <= written
    assert summary.added == len(written) == summary.scanned - summary.failed


def status_mb(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, field
    return int(match[1]) / 1024


def peak_growth_mb(work: Callable[[], object]) -> float:
    """How far this process's peak resident memory rose above its resident memory while `work` ran
    (Linux: writing 5 to /proc/self/clear_refs resets the peak, VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = status_mb("VmRSS")
    work()
    return status_mb("VmHWM") - before


def test_every_extreme_image_decodes_or_is_refused_in_little_memory(encoder: ClipEncoder) -> None:
    """Before the bound the greyscale 16,000 x 16,000 PNG took 1.2 GB, its RGBA twin 2 GB."""
    blobs = [make() for _, make, _ in CASES.values()]
    encoder.encode_images([draw_shape("circle", "red")])  # warm up

    def decode_and_encode_all() -> None:
        for blob in blobs:
            try:
                image, _, _ = load_image(blob, draft_size=448, max_decode_mb=200)
            except BadImage:
                continue
            assert np.isfinite(encoder.encode_images([image])).all()

    growth = peak_growth_mb(decode_and_encode_all)
    assert growth < 60, f"peak rose {growth:.0f} MB"


@pytest.mark.parametrize("name", ["1x65000", "65000x1"])
def test_a_strip_of_a_few_hundred_bytes_costs_the_clip_processor_little(encoder: ClipEncoder, name: str) -> None:
    """Without clip_view the processor resizes the 1 px side to 64 px first: 3.1 GB for this strip
    (200 MB for a 1 x 6,500 one, which the first assertion shows)."""
    shorter = Image.new("RGB", (1, 6500) if name == "1x65000" else (6500, 1))
    assert peak_growth_mb(lambda: encoder.processor(images=[shorter], return_tensors="pt")) > 100
    image, _, _ = load_image(CASES[name][1]())
    assert peak_growth_mb(lambda: encoder.encode_images([image])) < 20
