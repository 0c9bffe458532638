"""The OCR stage (`python -m indexer --ocr`, INDEX_OCR): the text lines in every indexed photo, read by
runners/ocr (rapidocr's PP-OCRv6 models), stored as payload of its point beside its description.

It follows the describe stage (indexer/describe_stage.py) and shares its pieces: it runs after the embedding run
over the points already in the collection; a point whose payload's `ocr_by` is not the current one (the models and
the reading rules: runners/ocr/reader.py, ReadOptions.ocr_by) is read. The fields (store.interface.OCR_FIELDS) go to the
store with set_descriptions, which also puts the read words into the point's text vector beside its description's.
Each batch is written at once, so a killed run loses at most the batch it was reading and the next run reads only
what is still missing. Content is read once: a point whose content hash another point already has a current read
for gets a copy (no model call). A photo that cannot be decoded or read is listed in the summary
(`cannot read its text: ...`); its batch-mates and the run go on, and it is tried again on the next run.

Both engines read here: the local engine in this process, the Ray engine (indexer/ray_ocr.py) on an actor pool,
each batch through `read_decoded`; the driver records every batch the same way (OcrStage.record).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from core.library import Library
from indexer.describe_stage import PixelBudget, SameContent, chunks, decode_photo, group_by_content
from indexer.pipeline import Summary, progress_bar
from runners.ocr import TextLine, read_text_norm
from store.interface import VectorStore, ocr_of

log = logging.getLogger(__name__)
STAGE = "ocr"  # its name on the progress bar and in the summary's seconds


class LineReader(Protocol):
    """What the stage needs of runners.ocr.TextReader."""

    @property
    def ocr_by(self) -> str: ...

    def read_each(self, images: Sequence[Image.Image | str]) -> list[list[TextLine] | str]: ...


class OcrEngine(Protocol):
    """Reads the photos elsewhere (indexer/ray_ocr.py, RayReader): yields each batch with its outcomes
    (read_decoded's), which the stage records as it records its own."""

    def __call__(self, photos: list[SameContent], root: Path, pixels: PixelBudget, ocr_by: str, batch_size: int
                 ) -> Iterator[tuple[list[SameContent], list[dict[str, Any] | str]]]: ...


@dataclass
class OcrOptions:
    batch_size: int = 16
    workers: int = 2
    progress: bool = True
    max_pixels: int = 4_000_000  # OCR_MAX_PIXELS: photos are decoded and shrunk to this before they are read
    stop: Callable[[], bool] | None = None  # asked between batches (watch mode's SIGTERM)

    @property
    def pixels(self) -> PixelBudget:
        return PixelBudget(decode=self.max_pixels, shrink=self.max_pixels)


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


def read_decoded(model: Callable[[], LineReader], decoded: list[Image.Image | str], ocr_by: str
                 ) -> list[dict[str, Any] | str]:
    """Each decoded photo's OCR fields, or why it has none (its decode's reason, or the reader's). `model()` gives
    the reader; it is asked for only when the batch holds an image. Both engines read here."""
    if not any(isinstance(image, Image.Image) for image in decoded):
        return [str(image) for image in decoded]
    outcomes: list[dict[str, Any] | str] = []
    for result in model().read_each(decoded):
        outcomes.append(result if isinstance(result, str) else read_payload(result, ocr_by))
    return outcomes


class OcrStage:
    """Read every point of `store` not read by `ocr_by`; the counts go into `summary.ocr`."""

    def __init__(self, store: VectorStore, root: Path, ocr_by: str, load: Callable[[], LineReader],
                 summary: Summary, options: OcrOptions | None = None, engine: OcrEngine | None = None) -> None:
        self.store = store
        self.root = root
        self.library = Library(root)
        self.ocr_by = ocr_by
        self.load = load
        self.reader: LineReader | None = None
        self.summary = summary
        self.options = options or OcrOptions()
        self.engine = engine
        self.counts = OcrCounts(ocr_by)

    def run(self) -> Summary:
        start = time.perf_counter()
        copies, photos, total = self.todo()
        bar = progress_bar(total, self.options.progress, STAGE)
        pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="ocr-decode")
        try:
            self.copy(copies, bar)
            reading = time.perf_counter()
            batches = (self.engine(photos, self.root, self.options.pixels, self.ocr_by, self.options.batch_size)
                       if self.engine is not None else self.read_batches(photos, pool))
            for batch, outcomes in batches:
                self.record(batch, outcomes)
                self.counts.photos_read += sum(1 for outcome in outcomes if not isinstance(outcome, str))
                bar.update(sum(len(photo.ids) for photo in batch))
                if self.options.stop is not None and self.options.stop():
                    break
            self.counts.read_seconds = time.perf_counter() - reading
            if total:
                self.store.flush() if self.options.stop is not None else self.store.finish()
        finally:
            pool.shutdown()
            bar.close()
            self.summary.seconds[STAGE] = round(time.perf_counter() - start, 3)
            self.summary.ocr = self.counts.as_dict()
        return self.summary

    def read_batches(self, photos: list[SameContent], pool: ThreadPoolExecutor
                     ) -> Iterator[tuple[list[SameContent], list[dict[str, Any] | str]]]:
        """The local engine: decode each batch on `pool`, read it here."""
        for batch in chunks(photos, self.options.batch_size):
            decoded = list(pool.map(lambda photo: decode_photo(self.library, photo, self.options.pixels), batch))
            yield batch, read_decoded(self.model, decoded, self.ocr_by)

    def record(self, batch: list[SameContent], outcomes: list[dict[str, Any] | str]) -> None:
        """Write the OCR fields of one batch (each photo's go to every point holding it) and list the photos that
        have none (both engines record here)."""
        written: dict[str, dict[str, Any]] = {}
        for photo, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, str):
                for path in photo.paths:
                    self.counts.failed += 1
                    self.summary.failures.append((path, outcome if outcome.startswith("cannot read its text")
                                                  else f"cannot read its text: {outcome}"))
                continue
            written.update({pid: outcome for pid in photo.ids})
        if written:
            self.store.set_descriptions(written)
            self.count_written(written.values())

    def count_written(self, fields: Any) -> None:
        for one in fields:
            self.counts.read += 1
            lines = len(one.get("ocr_lines") or [])
            self.counts.lines += lines
            self.counts.with_text += 1 if lines else 0

    def todo(self) -> tuple[dict[str, dict[str, Any]], list[SameContent], int]:
        """What this run must do: copies of current reads (id -> fields), the photos to read, and how many points
        that is in all."""
        payloads = dict(self.store.payloads())
        current: dict[str, dict[str, Any]] = {}
        for _, payload in sorted(payloads.items()):
            digest = payload.get("content_hash")
            if digest and payload.get("ocr_by") == self.ocr_by and digest not in current:
                current[digest] = ocr_of(payload)
        todo = sorted((pid for pid, p in payloads.items() if p.get("ocr_by") != self.ocr_by),
                      key=lambda pid: str(payloads[pid].get("path", pid)))
        copies = {pid: current[h] for pid in todo if (h := payloads[pid].get("content_hash")) in current}
        return copies, group_by_content(payloads, [pid for pid in todo if pid not in copies]), len(todo)

    def copy(self, copies: dict[str, dict[str, Any]], bar: Any) -> None:
        for chunk in chunks(list(copies.items()), self.options.batch_size):
            self.store.set_descriptions(dict(chunk))
            self.count_written(dict(chunk).values())
            self.counts.reused += len(chunk)
            bar.update(len(chunk))

    def model(self) -> LineReader:
        """The reader, made when the first photo needs it."""
        if self.reader is None:
            self.reader = self.load()
            if self.reader.ocr_by != self.ocr_by:  # both come from the same settings
                raise RuntimeError(f"the reader writes {self.reader.ocr_by!r}, the stage expected {self.ocr_by!r}")
        return self.reader
