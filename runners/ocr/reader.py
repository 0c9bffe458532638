"""TextReader: the text lines in a photo, read by rapidocr's PP-OCRv6 models (a plain class, no BentoML).

rapidocr 3.10.0 (pinned in requirements.txt) carries its models in its wheel: PP-OCRv6 small detection and
recognition models (Chinese, English and mixed), so nothing is downloaded at run time (upside-down lines: see
FLIP_BELOW). It is imported when the first photo is read. OCR_RUNTIME picks the engine that runs them,
ONNX Runtime or OpenVINO: the same models, the same reads (BENCHMARKS.md, "Text in photos"), so `ocr_by`, the
id recorded with each photo's lines (like `described_by`), names the models and the rules of this module, not the
runtime.

Bounds, whatever the photo: the image is shrunk to OCR_MAX_PIXELS before it is read (rapidocr then works on at
most 2,000 px a side), an image longer than MAX_ASPECT times its width (or the reverse) is read as at most
MAX_TILES overlapping tiles of that shape stacked into one sheet, one whose short side is under MIN_SIDE px holds
no readable text (read as none), the detector considers at most 4 x OCR_MAX_LINES boxes, at most FLIP_MAX lines a
tile are read a second time, and a photo keeps its OCR_MAX_LINES most confident lines. Decoding (16-bit PNG, CMYK
JPEG, animated GIF, decompression bombs) is core/images.py's, done by the caller (indexer/ocr_stage.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core.images import fit_pixels
from runners.ocr.text import normalized

log = logging.getLogger(__name__)

PACKAGE = "rapidocr-3.10.0"
# The model files of the pinned rapidocr's wheel this module runs (named to the runtime: make_runtime): detection and
# recognition. Not its text-direction classifier: on clear signs beside a blob it turned lines upside down ("EXIT 出口"
# read as "日13"); instead a line read with less than FLIP_BELOW confidence is read again turned by 180 degrees, and
# the more confident read is kept (an upside-down photo's lines are read right so).
MODELS = ("PP-OCRv6_det_small", "PP-OCRv6_rec_small")
FLIP_BELOW = 0.9
FLIP_MAX = 16  # lines per tile read again turned, at most: the unsure ones with the largest boxes (time stays bounded)
RULES_VERSION = 3  # bump when what this module keeps of a read changes (filters, boxes): every photo is read again
RUNTIMES = ("onnxruntime", "openvino")
MIN_SIDE = 8  # px: a thinner image holds no line a person could read
# Longer than this many times its short side: read as overlapping tiles of this shape (the detector scales a photo's
# short side to 736 px, so a long strip read whole costs as many pixels as its length asks), each starting
# TILE_STEP short sides after the last (so a word up to 1.5 short sides long is whole in one of them), at most
# MAX_TILES of them (the rest of a longer banner, over 21.5:1, is not read), stacked into one sheet (mosaic) that the
# detector reads in one go.
MAX_ASPECT = 4
TILE_STEP = 2.5
MAX_TILES = 8
MAX_LINE_CHARS = 300  # a line's text is cut here (a read of a photo full of text stays bounded)
# A line of one character (after normalization, spaces left out) is kept only when it is a CJK character read with
# this confidence or more (出, 药): round blobs, wheels and plates get read as "O", "C" or "0", often confidently. A
# line without a letter or digit (a blob read as "■", "•" or "–") is never kept.
SHORT_LINE_CHARS = 1
SHORT_LINE_MIN_CONFIDENCE = 0.9


@dataclass(frozen=True)
class ReadOptions:
    runtime: str = "onnxruntime"  # OCR_RUNTIME
    max_lines: int = 100  # OCR_MAX_LINES
    min_confidence: float = 0.5  # OCR_MIN_CONFIDENCE
    max_pixels: int = 4_000_000  # OCR_MAX_PIXELS
    threads: int = 0  # OCR_THREADS; 0: the runtime's default (every core)

    @property
    def ocr_by(self) -> str:
        """The models, and a short hash of the rules and bounds that decide which lines are kept: a change of
        any re-reads every photo on the next `--ocr` run; a change of runtime or threads does not."""
        rules = f"v{RULES_VERSION}|{self.max_lines}|{self.min_confidence:g}|{self.max_pixels}"
        return f"{PACKAGE}/{'+'.join(MODELS)}#{hashlib.sha256(rules.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class TextLine:
    """One line read: its text, the model's confidence (0-1), its box as fractions of the photo's width and
    height (x0, y0, x1, y1: the axis-aligned bounds of the line's quadrilateral) and the angle of the line's
    top edge in degrees (clockwise, as image coordinates go)."""

    text: str
    confidence: float
    box: tuple[float, float, float, float]
    angle: float

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, "confidence": round(self.confidence, 4),
                "box": [round(v, 4) for v in self.box], "angle": round(self.angle, 1)}


class TextReader:
    """Reads text lines from PIL images; the OCR engine is made (and rapidocr imported) on the first read."""

    def __init__(self, options: ReadOptions | None = None) -> None:
        self.options = options or ReadOptions()
        if self.options.runtime not in RUNTIMES:
            raise ValueError(f"OCR_RUNTIME must be one of {', '.join(RUNTIMES)}, not {self.options.runtime!r}")
        self._runtime: Any = None
        self._lock = threading.Lock()

    @property
    def ocr_by(self) -> str:
        return self.options.ocr_by

    def runtime(self) -> Any:
        with self._lock:
            if self._runtime is None:
                self._runtime = make_runtime(self.options)
            return self._runtime

    def read(self, image: Image.Image) -> list[TextLine]:
        """The lines in `image`, most confident first cut to OCR_MAX_LINES, then in reading order (top to bottom,
        left to right). An image too thin to hold text gives none."""
        if image.mode != "RGB":
            from core.images import to_rgb

            image = to_rgb(image)
        image = fit_pixels(image, self.options.max_pixels)
        width, height = image.size
        if min(width, height) < MIN_SIDE:
            return []
        pieces = tiles(image)
        if len(pieces) == 1:
            found = self._read_tile(image)
        else:  # one read of the tiles stacked (mosaic), each line taken back to its tile
            sheet, place = mosaic(pieces, wide=width > height)
            found = [(text, score, place(points)) for text, score, points in self._read_tile(sheet)]
        lines = [line_of(text, score, points, width, height) for text, score, points in found]
        return self.kept(distinct(lines))

    def read_each(self, images: Sequence[Image.Image | str]) -> list[list[TextLine] | str]:
        """Each image's lines, or why it has none: a string given in its place (a decode's reason) stays, and a
        read that fails is that photo's reason; the others are read as if alone."""
        out: list[list[TextLine] | str] = []
        for image in images:
            if isinstance(image, str):
                out.append(image)
                continue
            try:
                out.append(self.read(image))
            except MemoryError:
                out.append("cannot read its text: out of memory")
            except Exception as exc:  # noqa: BLE001 - one photo's failure must not fail its batch
                log.warning("OCR failed on one photo: %r", exc)
                out.append(f"cannot read its text: {type(exc).__name__}: {exc}"[:300])
        return out

    def _read_tile(self, tile: Image.Image) -> list[tuple[str, float, list[tuple[float, float]]]]:
        """(text, confidence, the box's four points in the tile's pixels) of each line the models read in it."""
        engine = self.runtime()
        result = engine(tile, use_det=True, use_cls=False, use_rec=True)  # explicit: a call's flags persist
        texts, scores, boxes = result.txts, result.scores, result.boxes
        if texts is None or boxes is None or scores is None:
            return []
        texts, scores = list(texts), list(scores)
        unsure = sorted((i for i, score in enumerate(scores) if score < FLIP_BELOW),
                        key=lambda i: -quad_area(boxes[i]))[:FLIP_MAX]
        if unsure:
            import numpy as np
            from rapidocr.utils.process_img import get_rotate_crop_image

            bgr = np.ascontiguousarray(np.asarray(tile)[..., ::-1])
            for i in unsure:
                crop = get_rotate_crop_image(bgr, np.asarray(boxes[i], dtype=np.float32))
                again = engine(np.ascontiguousarray(np.rot90(crop, 2)), use_det=False, use_cls=False, use_rec=True)
                if again.txts and again.scores and float(again.scores[0]) > scores[i]:
                    texts[i], scores[i] = again.txts[0], float(again.scores[0])
        return [(str(text).strip()[:MAX_LINE_CHARS], float(score), [(float(x), float(y)) for x, y in quad])
                for text, score, quad in zip(texts, scores, boxes, strict=True)]

    def kept(self, lines: list[TextLine]) -> list[TextLine]:
        """The lines worth keeping: confident enough, not a lone low-confidence character, the OCR_MAX_LINES most
        confident, in reading order."""
        good = [line for line in lines if line.confidence >= self.options.min_confidence and worth_keeping(line)]
        best = sorted(good, key=lambda line: -line.confidence)[:self.options.max_lines]
        return sorted(best, key=lambda line: (round((line.box[1] + line.box[3]) / 2, 2), line.box[0]))


def line_of(text: str, score: float, points: list[tuple[float, float]], width: int, height: int) -> TextLine:
    """A line read, its box as fractions of the image (width x height) and the angle of its top edge."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    box = (clamp(min(xs) / width), clamp(min(ys) / height), clamp(max(xs) / width), clamp(max(ys) / height))
    (x0, y0), (x1, y1) = points[0], points[1]
    return TextLine(text, score, box, math.degrees(math.atan2(y1 - y0, x1 - x0)))


def mosaic(pieces: list[tuple[int, int, Image.Image]], wide: bool
           ) -> tuple[Image.Image, Callable[[list[tuple[float, float]]], list[tuple[float, float]]]]:
    """The tiles of a long image stacked across (a wide image's one under the other, a tall one's side by side) with
    a white gap, so the detector reads them in one go at the size of one near-square image rather than each at 736
    px high; and the function that takes a line's points back from the sheet to the image."""
    short = min(pieces[0][2].size)
    gap = max(4, short // 4)
    pitch = short + gap
    count = len(pieces)
    long = max(max(tile.size) for _, _, tile in pieces)
    sheet = Image.new("RGB", (long, count * pitch - gap) if wide else (count * pitch - gap, long), "white")
    for i, (_, _, tile) in enumerate(pieces):
        sheet.paste(tile, (0, i * pitch) if wide else (i * pitch, 0))

    def place(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        centre = sum(p[1] if wide else p[0] for p in points) / len(points)
        i = min(count - 1, max(0, int(centre // pitch)))
        left, top, _ = pieces[i]
        if wide:
            return [(x + left, y - i * pitch) for x, y in points]
        return [(x - i * pitch, y + top) for x, y in points]

    return sheet, place


def worth_keeping(line: TextLine) -> bool:
    """Whether a line holds words: a letter or digit, and more than one character unless it is a confident CJK one."""
    text = normalized(line.text).replace(" ", "")
    if not any(c.isalnum() for c in text):
        return False
    if len(text) <= SHORT_LINE_CHARS:
        return not text.isascii() and line.confidence >= SHORT_LINE_MIN_CONFIDENCE
    return True


def make_runtime(options: ReadOptions) -> Any:
    """rapidocr's RapidOCR on the chosen runtime, with its logging quiet and the detector's boxes bounded."""
    import rapidocr
    from rapidocr import EngineType, RapidOCR

    engine = EngineType(options.runtime)
    models = Path(rapidocr.__file__).parent / "models"
    threads = options.threads if options.threads > 0 else -1
    params: dict[str, Any] = {
        "Global.log_level": "error", "Global.text_score": 0.0,  # kept() filters, after the flip
        "Det.max_candidates": min(1000, 4 * options.max_lines),
        "Global.use_cls": False,  # see MODELS
        "Det.engine_type": engine, "Rec.engine_type": engine,
        # The files named in MODELS, explicitly: what `ocr_by` says is what runs.
        "Det.model_path": str(models / f"{MODELS[0]}.onnx"), "Rec.model_path": str(models / f"{MODELS[1]}.onnx"),
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.openvino.inference_num_threads": threads,
    }
    return RapidOCR(params=params)


def tiles(image: Image.Image) -> list[tuple[int, int, Image.Image]]:
    """(left, top, tile): the whole image, or for one longer than MAX_ASPECT to one, overlapping tiles of that shape
    along its long side (see MAX_TILES)."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    size = short * MAX_ASPECT
    if long <= size:
        return [(0, 0, image)]
    step = int(short * TILE_STEP)
    starts = list(range(0, max(1, long - size + step), step))[:MAX_TILES]
    if width > height:
        return [(x, 0, image.crop((x, 0, min(width, x + size), height))) for x in starts]
    return [(0, y, image.crop((0, y, width, min(height, y + size)))) for y in starts]


def distinct(lines: list[TextLine]) -> list[TextLine]:
    """The lines less those read twice where tiles overlap: of two lines whose boxes mostly overlap, the longer
    (then the more confident) read is kept."""
    kept: list[TextLine] = []
    for line in sorted(lines, key=lambda item: (-len(item.text), -item.confidence)):
        if all(overlap(line.box, other.box) < 0.5 for other in kept):
            kept.append(line)
    return kept


def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The share of the smaller box that the two boxes have in common."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller if smaller > 0 else 0.0


def quad_area(quad: Any) -> float:
    """The area of a box's axis-aligned bounds, in pixels."""
    xs, ys = [float(p[0]) for p in quad], [float(p[1]) for p in quad]
    return (max(xs) - min(xs)) * (max(ys) - min(ys))


def clamp(value: float) -> float:
    return min(1.0, max(0.0, value))
