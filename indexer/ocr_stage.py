"""The OCR stage (`python -m indexer --ocr`, INDEX_OCR): the text lines in every indexed photo, read by runners/ocr
(rapidocr's PP-OCRv6 models), a payload stage (indexer/payload_stage.py: incremental, copies shared, resumable,
per-photo failures listed, both engines).

A point whose payload's `ocr_by` is not the current one (the models and the reading rules: runners/ocr/reader.py,
ReadOptions.ocr_by) is read. The fields (store.interface.OCR_FIELDS) go to the store with set_descriptions, which
also puts the read words into the point's text vector beside its description's. A photo that cannot be decoded or
read is listed (`cannot read its text: ...`) and tried again on the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from indexer.payload_stage import Outcome, PayloadEngine, PayloadKind, PayloadOptions, PayloadStage, PixelBudget
from indexer.pipeline import Summary
from runners.ocr import TextLine, read_text_norm
from store.interface import VectorStore, ocr_of


class LineReader(Protocol):
    """What the stage needs of runners.ocr.TextReader."""

    @property
    def ocr_by(self) -> str: ...

    def read_each(self, images: Sequence[Image.Image | str]) -> list[list[TextLine] | str]: ...


@dataclass
class OcrCounts:
    """What the summary's `ocr` holds (Summary.ocr; `--json`)."""

    ocr_by: str
    read: int = 0  # points that got their lines this run (read by the model, or copied)
    reused: int = 0  # of them, copied from a point with the same content (no model call)
    failed: int = 0  # points whose photo could not be read (listed in failures)
    with_text: int = 0  # points read this run that hold at least one line
    lines: int = 0
    read_seconds: float = 0.0  # time spent decoding, reading and writing photos (not copying)
    photos_read: int = 0  # photos (contents) read by the model

    def as_dict(self) -> dict[str, Any]:
        return {"ocr_by": self.ocr_by, "read": self.read, "reused": self.reused, "failed": self.failed,
                "with_text": self.with_text, "lines": self.lines, "photos_read": self.photos_read,
                "photos_per_s": round(self.photos_read / self.read_seconds, 3) if self.read_seconds > 0 else 0.0}


def read_payload(lines: Sequence[TextLine], ocr_by: str) -> dict[str, Any]:
    """The OCR_FIELDS of a photo whose lines are `lines` (in reading order)."""
    texts = [line.text for line in lines]
    return {"ocr_text": "\n".join(texts), "ocr_lines": [line.payload() for line in lines],
            "ocr_norm": read_text_norm(texts), "ocr_by": ocr_by}


class TextReads(PayloadKind):
    """The OCR stage's kind: the lines read; counted in the summary's `ocr` (OcrCounts)."""

    stage = "ocr"
    marker = "ocr_by"
    failure = "cannot read its text"

    def __init__(self, by: str) -> None:
        super().__init__(by)
        self.counts = OcrCounts(by)

    def fields_of(self, payload: dict[str, Any]) -> dict[str, Any]:
        return ocr_of(payload)

    def outcomes(self, model: LineReader, images: list[Image.Image]) -> list[Outcome]:
        return [result if isinstance(result, str) else read_payload(result, self.by)
                for result in model.read_each(images)]

    def counted(self, summary: Summary, fields: Iterable[dict[str, Any]], copied: bool) -> None:
        for one in fields:
            lines = len(one.get("ocr_lines") or [])
            self.counts.read += 1
            self.counts.reused += 1 if copied else 0
            self.counts.lines += lines
            self.counts.with_text += 1 if lines else 0

    def failed(self, summary: Summary, path: str, reason: str) -> None:
        self.counts.failed += 1
        super().failed(summary, path, reason)

    def finished(self, summary: Summary, photos: int, seconds: float) -> None:
        self.counts.photos_read, self.counts.read_seconds = photos, seconds
        summary.ocr = self.counts.as_dict()


def ocr_options(batch_size: int = 16, workers: int = 2, progress: bool = True, max_pixels: int = 4_000_000,
                stop: Callable[[], bool] | None = None) -> PayloadOptions:
    """The stage's options: photos decoded and shrunk to `max_pixels` (OCR_MAX_PIXELS) before they are read."""
    return PayloadOptions(batch_size, workers, progress, PixelBudget(decode=max_pixels, shrink=max_pixels), stop)


class OcrStage(PayloadStage):
    """Read every point of `store` not read by `ocr_by`; the counts go into `summary.ocr`."""

    def __init__(self, store: VectorStore, root: Path, ocr_by: str, load: Callable[[], LineReader],
                 summary: Summary, options: PayloadOptions | None = None, engine: PayloadEngine | None = None
                 ) -> None:
        super().__init__(TextReads(ocr_by), store, root, load, summary, options or ocr_options(), engine)
