"""The describe stage (`python -m indexer --describe`): VQA_MODEL's description of every indexed photo.

It runs after the embedding run, over the points already in the collection: a point whose payload's
`described_by` is not the current one (runners/vlm/describe.py: the model id and a hash of DESCRIBE_PROMPT) is
described. Descriptions are payload fields of existing points (store.set_descriptions), whose ids are
deterministic, so a killed run loses at most the batch it was generating, and the next run describes only
what is still missing, with no duplicates. Content is described once: a point whose content hash another
point already has a current description for gets a copy (no model call), and copies of one photo that
both need describing share one answer. A photo that cannot be read, decoded or described is listed in the
summary; the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from core.images import BadImage, load_image
from core.library import Library, NotInLibrary
from indexer.decode import content_hash
from indexer.pipeline import Summary, progress_bar
from store.interface import VectorStore, description_of

log = logging.getLogger(__name__)
STAGE = "describe"  # its name on the progress bar and in the summary's seconds


class ImageDescriber(Protocol):
    """What the stage needs of runners.vlm.describe.Describer."""

    described_by: str

    def describe(self, images: list[Image.Image]) -> list[Any]: ...


class DescribeEngine(Protocol):
    """Describes the photos elsewhere (indexer/ray_engine.py, RayDescriber): yields each batch with its
    outcomes (describe_decoded's), which the stage records as it records its own."""

    def __call__(self, photos: list[SameContent], root: Path, pixels: PixelBudget, described_by: str,
                 batch_size: int) -> Iterator[tuple[list[SameContent], list[dict[str, Any] | str]]]: ...


@dataclass(frozen=True)
class PixelBudget:
    """How a photo is decoded for the describer (pixel_budget() makes it): `decode` bounds the JPEG's reduced-scale
    decode (it still holds at least this many pixels), `shrink` the image handed over (0: as decoded, the model's
    processor then applies VQA_MAX_PIXELS itself, as it does for /vqa). 0 means no bound."""

    decode: int = 0
    shrink: int = 0


@dataclass
class SameContent:
    """One content to describe and every point that holds it (copies share one description)."""

    content_hash: str
    ids: list[str]
    paths: list[str]  # library names, in the order of `ids`


@dataclass
class DescribeOptions:
    batch_size: int = 8
    workers: int = 4
    progress: bool = True
    pixels: PixelBudget = PixelBudget()  # pixel_budget(): how photos are decoded and shrunk


class DescribeStage:
    """Describe every point of `store` not described by `described_by`; the counts go into `summary`."""

    def __init__(self, store: VectorStore, root: Path, described_by: str, load: Callable[[], ImageDescriber],
                 summary: Summary, options: DescribeOptions | None = None,
                 engine: DescribeEngine | None = None) -> None:
        self.engine = engine
        self.root = root
        self.store = store
        self.library = Library(root)
        self.described_by = described_by
        self.load = load
        self.describer: ImageDescriber | None = None
        self.summary = summary
        self.options = options or DescribeOptions()

    def run(self) -> Summary:
        start = time.perf_counter()
        copies, photos, total = self.todo()
        bar = progress_bar(total, self.options.progress, STAGE)
        pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="describe-decode")
        try:
            self.copy(copies, bar)
            if self.engine is None:
                for batch in chunks(photos, self.options.batch_size):
                    self.describe_batch(batch, pool)
                    bar.update(sum(len(photo.ids) for photo in batch))
            else:
                for batch, outcomes in self.engine(photos, self.root, self.options.pixels, self.described_by,
                                                   self.options.batch_size):
                    self.record(batch, outcomes)
                    bar.update(sum(len(photo.ids) for photo in batch))
            if total:
                self.store.finish()
        finally:
            pool.shutdown()
            bar.close()
            self.summary.seconds[STAGE] = round(time.perf_counter() - start, 3)
        return self.summary

    def describe_batch(self, batch: list[SameContent], pool: ThreadPoolExecutor) -> None:
        """Decode (on `pool`), describe and write one batch; each photo that fails is listed, its batch-mates
        go on."""
        decoded = list(pool.map(self.decode, batch))
        self.record(batch, describe_decoded(self.model, decoded, self.described_by))

    def record(self, batch: list[SameContent], outcomes: list[dict[str, Any] | str]) -> None:
        """Write the descriptions of one batch (each photo's fields go to every point holding it) and list
        the photos that have none (both engines record here)."""
        written: dict[str, dict[str, Any]] = {}
        for photo, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, str):
                self.fail(photo, outcome)
            else:
                written.update({pid: outcome for pid in photo.ids})
        if written:
            self.store.set_descriptions(written)
            self.summary.described += len(written)

    def todo(self) -> tuple[dict[str, dict[str, Any]], list[SameContent], int]:
        """What this run must do: copies of current descriptions (id -> fields), the photos to describe,
        and how many points that is in all."""
        payloads = dict(self.store.payloads())
        current = current_descriptions(payloads, self.described_by)
        todo = sorted((pid for pid, p in payloads.items()  # video moments (indexer/moments.py) are not photos
                       if p.get("described_by") != self.described_by and p.get("media") != "video"),
                      key=lambda pid: str(payloads[pid].get("path", pid)))
        copies = {pid: current[h] for pid in todo if (h := payloads[pid].get("content_hash")) in current}
        return copies, group_by_content(payloads, [pid for pid in todo if pid not in copies]), len(todo)

    def copy(self, copies: dict[str, dict[str, Any]], bar: Any) -> None:
        for chunk in chunks(list(copies.items()), self.options.batch_size):
            self.store.set_descriptions(dict(chunk))
            self.summary.described += len(chunk)
            self.summary.descriptions_reused += len(chunk)
            bar.update(len(chunk))

    def model(self) -> ImageDescriber:
        """The describer, loaded when the first photo needs it (seconds to minutes for a real model)."""
        if self.describer is None:
            self.describer = self.load()
            if self.describer.described_by != self.described_by:  # both come from the same settings
                raise RuntimeError(f"the describer writes {self.describer.described_by!r}, "
                                   f"the stage expected {self.described_by!r}")
        return self.describer

    def decode(self, photo: SameContent) -> Image.Image | str:
        return decode_photo(self.library, photo, self.options.pixels)

    def fail(self, photo: SameContent, reason: str) -> None:
        for path in photo.paths:
            self.summary.describe_failed += 1
            self.summary.failures.append((path, f"cannot describe: {reason}"))


def decode_photo(library: Library, photo: SameContent, pixels: PixelBudget) -> Image.Image | str:
    """The photo's image, or why it cannot be described: unreadable, changed since it was indexed
    (the next run's embedding sees the change and this stage then describes the new content), or not
    decodable (IMAGE_MAX_DECODE_MB bounds the decode as in the embedding run). Both engines decode here."""
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
    return shrink(image, pixels.shrink)


def shrink(image: Image.Image, max_pixels: int) -> Image.Image:
    """The image as is when it holds at most `max_pixels` (or there is no bound), else resized to fit, keeping
    its shape: the model's processor then only rounds it to its patch grid."""
    if max_pixels <= 0 or image.width * image.height <= max_pixels:
        return image
    scale = (max_pixels / (image.width * image.height)) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def pixel_budget(describe_max_pixels: int, vqa_max_pixels: int) -> PixelBudget:
    """The pixels a photo is described at: DESCRIBE_MAX_PIXELS when set and below VQA_MAX_PIXELS, else
    VQA_MAX_PIXELS; 0 means no bound. Only a DESCRIBE_MAX_PIXELS below VQA_MAX_PIXELS shrinks the photo here:
    VQA_MAX_PIXELS is the model's processor's own bound, applied by it in one resize, as for /vqa."""
    bounds = [value for value in (describe_max_pixels, vqa_max_pixels) if value > 0]
    decode = min(bounds, default=0)
    return PixelBudget(decode=decode, shrink=decode if decode and decode != vqa_max_pixels else 0)


def describe_decoded(model: Callable[[], ImageDescriber], decoded: list[Image.Image | str], described_by: str
                     ) -> list[dict[str, Any] | str]:
    """Each decoded photo's description fields, or why it has none (its decode's reason, or the model's).
    `model()` gives the describer; it is asked for only when the batch holds an image. Both engines
    describe here."""
    ready = [i for i, image in enumerate(decoded) if isinstance(image, Image.Image)]
    outcomes: list[dict[str, Any] | str] = [image if isinstance(image, str) else "" for image in decoded]
    if ready:
        results = model().describe([image for image in decoded if isinstance(image, Image.Image)])
        for i, result in zip(ready, results, strict=True):
            outcomes[i] = result if isinstance(result, str) else result.payload(described_by)
    return outcomes


def current_descriptions(payloads: dict[str, dict[str, Any]], described_by: str) -> dict[str, dict[str, Any]]:
    """content hash -> the description fields of a point already described by `described_by`."""
    found: dict[str, dict[str, Any]] = {}
    for _, payload in sorted(payloads.items()):
        digest = payload.get("content_hash")
        if digest and payload.get("described_by") == described_by and digest not in found:
            found[digest] = description_of(payload)
    return found


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
    the VQA_MAX_PIXELS the model's processor keeps; None (full scale) when there is no bound."""
    return int(max_pixels ** 0.5) + 1 if max_pixels > 0 else None


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
