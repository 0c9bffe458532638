"""A payload stage: after the embedding run, a model adds fields to the points already in the collection. Two kinds
plug in (a `PayloadKind` each): the describe stage (indexer/describe_stage.py: VQA_MODEL's description) and the OCR
stage (indexer/ocr_stage.py: the lines of text read in the photo).

What both share lives here, once: a point whose payload's marker (`described_by`, `ocr_by`: the model id and its
rules) is not the current one gets the fields; they are written with store.set_descriptions, batch by batch, on
points whose ids are deterministic, so a killed run loses at most the batch it was working on and the next run does
only what is still missing, with no duplicates. Content is processed once: a point whose content hash another point
already has current fields for gets a copy (no model call), and copies of one photo share one model call. A photo
that cannot be read, decoded or processed is listed in the summary; its batch-mates and the run go on. Video
moments (indexer/moments.py) are not photos and are left alone.

The model runs here (the local engine) or elsewhere through a `PayloadEngine` (indexer/ray_engine.py, RayPayloads:
an actor pool), each batch through `produce`; the driver records every batch the same way (PayloadStage.record).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from PIL import Image

from core.images import BadImage, fit_pixels, load_image
from core.library import Library, NotInLibrary
from indexer.decode import content_hash
from indexer.pipeline import Summary, progress_bar
from store.interface import VectorStore

log = logging.getLogger(__name__)

Outcome = dict[str, Any] | str  # a photo's fields, or why it has none


@dataclass(frozen=True)
class PixelBudget:
    """How a photo is decoded for the model: `decode` bounds the JPEG's reduced-scale decode (it still holds at least
    this many pixels), `shrink` the image handed over (0: as decoded). 0 means no bound."""

    decode: int = 0
    shrink: int = 0


@dataclass
class SameContent:
    """One content to process and every point that holds it (copies share one model call)."""

    content_hash: str
    ids: list[str]
    paths: list[str]  # library names, in the order of `ids`


class PayloadKind:
    """What one kind of payload plugs into the stage: its name, its marker field, how a batch of images becomes
    fields, and how its counts go into the summary. Subclasses are plain picklable objects (Ray ships them)."""

    stage: ClassVar[str]  # its name on the progress bar and in the summary's seconds
    marker: ClassVar[str]  # the payload field naming what wrote the fields; the model has the same attribute
    failure: ClassVar[str]  # how a photo without fields is listed: "<failure>: <reason>"
    uses_gpu: ClassVar[bool] = False  # the Ray engine gives each actor a GPU when the cluster has them

    def __init__(self, by: str) -> None:
        self.by = by  # the current marker: a point with another one is processed

    def fields_of(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The fields of a point already processed (what a copy gets)."""
        raise NotImplementedError

    def outcomes(self, model: Any, images: list[Image.Image]) -> list[Outcome]:
        """Each image's fields, or why it has none (one image's failure never fails the others)."""
        raise NotImplementedError

    def counted(self, summary: Summary, fields: Iterable[dict[str, Any]], copied: bool) -> None:
        """Count points that got their fields (`copied`: from a point with the same content)."""
        raise NotImplementedError

    def failed(self, summary: Summary, path: str, reason: str) -> None:
        summary.failures.append((path, reason if reason.startswith(self.failure) else f"{self.failure}: {reason}"))

    def finished(self, summary: Summary, photos: int, seconds: float) -> None:
        """The stage is over: `photos` contents went through the model in `seconds`."""


class PayloadEngine(Protocol):
    """Runs the model elsewhere (indexer/ray_engine.py, RayPayloads): yields each batch with its outcomes
    (produce's), which the stage records as it records its own."""

    def __call__(self, photos: list[SameContent], root: Path, pixels: PixelBudget, kind: PayloadKind,
                 batch_size: int) -> Iterator[tuple[list[SameContent], list[Outcome]]]: ...


@dataclass
class PayloadOptions:
    batch_size: int = 8
    workers: int = 4
    progress: bool = True
    pixels: PixelBudget = PixelBudget()  # how photos are decoded and shrunk for the model
    stop: Callable[[], bool] | None = None  # asked between batches (watch mode's SIGTERM)


class PayloadStage:
    """Give every point of `store` whose marker is not `kind.by` its fields; the counts go into `summary`."""

    def __init__(self, kind: PayloadKind, store: VectorStore, root: Path, load: Callable[[], Any],
                 summary: Summary, options: PayloadOptions | None = None, engine: PayloadEngine | None = None
                 ) -> None:
        self.kind = kind
        self.store = store
        self.root = root
        self.library = Library(root)
        self.load = load
        self.loaded: Any = None
        self.summary = summary
        self.options = options or PayloadOptions()
        self.engine = engine

    def run(self) -> Summary:
        start = time.perf_counter()
        copies, photos, total = self.todo()
        bar = progress_bar(total, self.options.progress, self.kind.stage)
        pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix=f"{self.kind.stage}-decode")
        processed, seconds = 0, 0.0
        try:
            self.copy(copies, bar)
            working = time.perf_counter()
            batches = (self.engine(photos, self.root, self.options.pixels, self.kind, self.options.batch_size)
                       if self.engine is not None else self.batches_here(photos, pool))
            for batch, outcomes in batches:
                self.record(batch, outcomes)
                processed += sum(1 for outcome in outcomes if not isinstance(outcome, str))
                bar.update(sum(len(photo.ids) for photo in batch))
                if self.options.stop is not None and self.options.stop():
                    break
            seconds = time.perf_counter() - working
            if total:
                self.store.flush() if self.options.stop is not None else self.store.finish()
        finally:
            pool.shutdown()
            bar.close()
            self.summary.seconds[self.kind.stage] = round(time.perf_counter() - start, 3)
            self.kind.finished(self.summary, processed, seconds)
        return self.summary

    def batches_here(self, photos: list[SameContent], pool: ThreadPoolExecutor
                     ) -> Iterator[tuple[list[SameContent], list[Outcome]]]:
        """The local engine: decode each batch on `pool`, run the model here."""
        for batch in chunks(photos, self.options.batch_size):
            decoded = list(pool.map(lambda photo: decode_photo(self.library, photo, self.options.pixels), batch))
            yield batch, produce(self.kind, self.model, decoded)

    def record(self, batch: list[SameContent], outcomes: list[Outcome]) -> None:
        """Write the fields of one batch (each photo's go to every point holding it) and list the photos that have
        none (both engines record here)."""
        written: dict[str, dict[str, Any]] = {}
        for photo, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, str):
                for path in photo.paths:
                    self.kind.failed(self.summary, path, outcome)
            else:
                written.update({pid: outcome for pid in photo.ids})
        if written:
            self.store.set_descriptions(written)
            self.kind.counted(self.summary, written.values(), copied=False)

    def todo(self) -> tuple[dict[str, dict[str, Any]], list[SameContent], int]:
        """What this run must do: copies of current fields (id -> fields), the photos to process, and how many
        points that is in all."""
        payloads = dict(self.store.payloads())
        current = self.current(payloads)
        todo = sorted((pid for pid, p in payloads.items()
                       if p.get(self.kind.marker) != self.kind.by and p.get("media") != "video"),
                      key=lambda pid: str(payloads[pid].get("path", pid)))
        copies = {pid: current[h] for pid in todo if (h := payloads[pid].get("content_hash")) in current}
        return copies, group_by_content(payloads, [pid for pid in todo if pid not in copies]), len(todo)

    def current(self, payloads: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """content hash -> the fields of a point already processed with the current marker."""
        found: dict[str, dict[str, Any]] = {}
        for _, payload in sorted(payloads.items()):
            digest = payload.get("content_hash")
            if digest and payload.get(self.kind.marker) == self.kind.by and digest not in found:
                found[digest] = self.kind.fields_of(payload)
        return found

    def copy(self, copies: dict[str, dict[str, Any]], bar: Any) -> None:
        for chunk in chunks(list(copies.items()), self.options.batch_size):
            self.store.set_descriptions(dict(chunk))
            self.kind.counted(self.summary, dict(chunk).values(), copied=True)
            bar.update(len(chunk))

    def model(self) -> Any:
        """The model, loaded when the first photo needs it (seconds to minutes for a real one)."""
        if self.loaded is None:
            self.loaded = self.load()
            written_by = getattr(self.loaded, self.kind.marker)
            if written_by != self.kind.by:  # both come from the same settings
                raise RuntimeError(f"the {self.kind.stage} model writes {written_by!r}, "
                                   f"the stage expected {self.kind.by!r}")
        return self.loaded


def produce(kind: PayloadKind, model: Callable[[], Any], decoded: list[Image.Image | str]) -> list[Outcome]:
    """Each decoded photo's fields, or why it has none (its decode's reason, or the model's). `model()` gives the
    model; it is asked for only when the batch holds an image. Both engines run the model here."""
    ready = [i for i, image in enumerate(decoded) if isinstance(image, Image.Image)]
    outcomes: list[Outcome] = [image if isinstance(image, str) else "" for image in decoded]
    if ready:
        results = kind.outcomes(model(), [image for image in decoded if isinstance(image, Image.Image)])
        for i, result in zip(ready, results, strict=True):
            outcomes[i] = result
    return outcomes


def decode_photo(library: Library, photo: SameContent, pixels: PixelBudget) -> Image.Image | str:
    """The photo's image, or why it cannot be processed: unreadable, changed since it was indexed (the next run's
    embedding sees the change and this stage then processes the new content), or not decodable
    (IMAGE_MAX_DECODE_MB bounds the decode as in the embedding run). Both engines decode here."""
    try:
        data = library.read_bytes(photo.paths[0])
    except NotInLibrary as exc:
        return f"cannot read: {exc.reason}"
    if content_hash(data) != photo.content_hash:
        return "changed since it was indexed: run the indexer again"
    try:
        image, _, _ = load_image(data, draft_size(pixels.decode))
    except BadImage as exc:
        return str(exc)
    return fit_pixels(image, pixels.shrink)


def group_by_content(payloads: dict[str, dict[str, Any]], ids: list[str]) -> list[SameContent]:
    """The points `ids` (in order) grouped by content hash, in the order each content first appears;
    a point without a hash is its own group."""
    photos: dict[str, SameContent] = {}
    for pid in ids:
        payload = payloads[pid]
        digest = str(payload.get("content_hash") or "")
        photo = photos.setdefault(digest or f"id:{pid}", SameContent(digest, [], []))
        photo.ids.append(pid)
        photo.paths.append(str(payload.get("path", pid)))
    return list(photos.values())


def draft_size(max_pixels: int) -> int | None:
    """A JPEG decodes at the smallest reduced scale whose sides are both at least this, so it still holds
    the pixels the model keeps; None (full scale) when there is no bound."""
    return int(max_pixels ** 0.5) + 1 if max_pixels > 0 else None


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
