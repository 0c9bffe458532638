"""runners/ocr's TextReader with the real models (rapidocr's PP-OCRv6, ONNX Runtime and OpenVINO) on photos the test
draws with Debian's CJK font (tests/signs.py): what it reads, where, and its bounds on hostile images
(tests/extreme_images.py's catalogue, decoded by core/images.py as the OCR stage decodes them)."""

from __future__ import annotations

import time

import pytest
from extreme_images import CASES
from PIL import Image
from signs import sign

from core.images import BadImage, fit_pixels, load_image
from indexer.payload_stage import PixelBudget
from runners.ocr import ReadOptions, TextLine, TextReader, normalized

SIGNS = [["金龙面馆"], ["Golden Dragon"], ["生日快乐 小明", "Happy Birthday"], ["EXIT 出口"]]


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


def texts(lines: list[TextLine]) -> list[str]:
    return [normalized(line.text) for line in lines]


def test_signs_in_chinese_english_and_mixed_are_read_with_their_boxes(reader: TextReader) -> None:
    for seed, lines in enumerate(SIGNS):
        read = reader.read(sign(lines, size=(1000, 750), seed=seed, place=(0.5, 0.5)))
        assert texts(read) == [normalized(line) for line in lines], (lines, read)
        for line in read:
            x0, y0, x1, y1 = line.box
            assert 0.15 < x0 < 0.5 < x1 < 0.85 and 0.3 < y0 < y1 < 0.7, line  # around the centred sign
            assert line.confidence >= 0.9 and abs(line.angle) < 3


def test_rotated_and_upside_down_signs(reader: TextReader) -> None:
    for angle in (-30, -15, 15, 30):
        [line] = reader.read(sign(["Dragon Fruit 火龙果"], size=(1000, 750), seed=7, angle=angle))
        assert normalized(line.text) == "dragon fruit火龙果", angle
        assert abs(line.angle + angle) < 6, (angle, line.angle)  # PIL turns counter-clockwise; y grows downwards
    upside = sign(["Bakery 面包店"], size=(800, 600), seed=8).rotate(180)
    assert texts(reader.read(upside)) == ["bakery面包店"]


def test_a_photo_full_of_text_keeps_its_most_confident_lines_in_reading_order() -> None:
    page = sign([f"Line {i} 第{i}行 text" for i in range(24)], size=(1200, 1600), text_px=30, seed=9,
                place=(0.5, 0.5))
    reader = TextReader(ReadOptions(max_lines=6))
    read = reader.read(page)
    assert len(read) == 6
    assert [line.box[1] for line in read] == sorted(line.box[1] for line in read)
    assert all(line.confidence >= 0.5 for line in read)


def test_short_unsure_reads_are_dropped() -> None:
    reader = TextReader(ReadOptions(min_confidence=0.5))
    box = (0.1, 0.1, 0.2, 0.2)
    lines = [TextLine("O", 0.7, box, 0.0), TextLine("C", 0.99, box, 0.0), TextLine("OK", 0.6, box, 0.0),
             TextLine("weak", 0.4, box, 0.0), TextLine("", 0.99, box, 0.0), TextLine("■", 0.99, box, 0.0),
             TextLine("• –", 0.99, box, 0.0), TextLine("出", 0.95, box, 0.0), TextLine("药", 0.6, box, 0.0)]
    assert sorted(line.text for line in reader.kept(lines)) == ["OK", "出"]


def test_onnxruntime_and_openvino_read_the_same(reader: TextReader) -> None:
    openvino = TextReader(ReadOptions(runtime="openvino"))
    assert openvino.ocr_by == reader.ocr_by
    for seed, lines in enumerate(SIGNS[:3]):
        photo = sign(lines, size=(900, 675), seed=20 + seed)
        assert texts(openvino.read(photo)) == texts(reader.read(photo)) == [normalized(line) for line in lines]


def test_hostile_images_are_read_within_bounds_or_refused_with_a_reason(reader: TextReader) -> None:
    pixels = PixelBudget(decode=4_000_000, shrink=4_000_000)  # as the stage decodes (OCR_MAX_PIXELS)
    for name, (_, make, refusal) in CASES.items():
        started = time.monotonic()
        try:
            image, _, _ = load_image(make(), draft_size=2001)
        except BadImage as exc:
            assert refusal is not None and refusal in str(exc), (name, exc)
            continue
        assert refusal is None, name
        assert isinstance(reader.read(fit_pixels(image, pixels.shrink)), list), name
        assert time.monotonic() - started < 60, name
    assert reader.read(Image.new("RGB", (40_000, 1))) == []
    assert reader.read(Image.new("RGB", (8, 8), "white")) == []
    assert reader.read(Image.new("I;16", (300, 200), 40_000)) == []  # any mode is made RGB first
    # A long banner is read in tiles, a word whole in one of them.
    banner = Image.new("RGB", (6000, 150), "white")
    banner.paste(sign(["WELCOME 欢迎"], size=(700, 150), seed=3, place=(0.5, 0.5)), (2650, 0))
    started = time.monotonic()
    assert "welcome欢迎" in texts(reader.read(banner))
    assert time.monotonic() - started < 60  # bounded (a few seconds on a quiet 2-core CPU; CI shares it)


def test_a_12_megapixel_photo_is_shrunk_before_it_is_read(reader: TextReader) -> None:
    photo = sign(["Golden Dragon 金龙"], size=(4000, 3000), text_px=160, seed=5)
    started = time.monotonic()
    assert texts(reader.read(photo)) == ["golden dragon金龙"]
    assert time.monotonic() - started < 60  # bounded (a few seconds on a quiet 2-core CPU; CI shares it)


def test_read_each_keeps_reasons_and_reads_the_rest(reader: TextReader) -> None:
    photo = sign(["EXIT 出口"], size=(900, 675), seed=4)
    out = reader.read_each(["cannot read: gone", photo, Image.new("RGB", (8, 8))])
    assert out[0] == "cannot read: gone" and out[2] == []
    assert isinstance(out[1], list) and texts(out[1]) == ["exit出口"]
