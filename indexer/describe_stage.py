"""The describe stage (`python -m indexer --describe`): VQA_MODEL's description of every indexed photo.

It runs after the embedding run, over the points already in the collection: a point whose payload's
`described_by` is not the current one (runners/describe.py: the model id and a hash of DESCRIBE_PROMPT) is
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
from store.base import VectorStore, description_of

log = logging.getLogger(__name__)
STAGE = "describe"  # its name on the progress bar and in the summary's seconds


class ImageDescriber(Protocol):
    """What the stage needs of runners.describe.Describer."""

    described_by: str

    def describe(self, images: list[Image.Image]) -> list[Any]: ...


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
    max_pixels: int = 0  # VQA_MAX_PIXELS: a JPEG decodes at a reduced scale still holding this many (0: full)


class DescribeStage:
    """Describe every point of `store` not described by `described_by`; the counts go into `summary`."""

    def __init__(self, store: VectorStore, root: Path, described_by: str, load: Callable[[], ImageDescriber],
                 summary: Summary, options: DescribeOptions | None = None) -> None:
        self.store = store
        self.library = Library(root)
        self.described_by = described_by
        self.load = load
        self.describer: ImageDescriber | None = None
        self.summary = summary
        self.options = options or DescribeOptions()

    def run(self) -> Summary:
        start = time.perf_counter()
        payloads = dict(self.store.payloads())
        current = current_descriptions(payloads, self.described_by)
        todo = sorted((pid for pid, p in payloads.items() if p.get("described_by") != self.described_by),
                      key=lambda pid: str(payloads[pid].get("path", pid)))
        copies = {pid: current[h] for pid in todo if (h := payloads[pid].get("content_hash")) in current}
        photos = group_by_content(payloads, [pid for pid in todo if pid not in copies])
        bar = progress_bar(len(todo), self.options.progress, STAGE)
        pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="describe-decode")
        try:
            for chunk in chunks(list(copies.items()), self.options.batch_size):
                self.store.set_descriptions(dict(chunk))
                self.summary.described += len(chunk)
                self.summary.descriptions_reused += len(chunk)
                bar.update(len(chunk))
            for batch in chunks(photos, self.options.batch_size):
                self.describe_batch(batch, pool)
                bar.update(sum(len(photo.ids) for photo in batch))
            if todo:
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
        ready = [(photo, image) for photo, image in zip(batch, decoded, strict=True) if isinstance(image, Image.Image)]
        for photo, reason in zip(batch, decoded, strict=True):
            if isinstance(reason, str):
                self.fail(photo, reason)
        if not ready:
            return
        results = self.model().describe([image for _, image in ready])
        written: dict[str, dict[str, Any]] = {}
        for (photo, _), result in zip(ready, results, strict=True):
            if isinstance(result, str):
                self.fail(photo, result)
                continue
            written.update({pid: result.payload(self.described_by) for pid in photo.ids})
        if written:
            self.store.set_descriptions(written)
            self.summary.described += len(written)

    def model(self) -> ImageDescriber:
        """The describer, loaded when the first photo needs it (seconds to minutes for a real model)."""
        if self.describer is None:
            self.describer = self.load()
            if self.describer.described_by != self.described_by:  # both come from the same settings
                raise RuntimeError(f"the describer writes {self.describer.described_by!r}, "
                                   f"the stage expected {self.described_by!r}")
        return self.describer

    def decode(self, photo: SameContent) -> Image.Image | str:
        """The photo's image, or why it cannot be described: unreadable, changed since it was indexed
        (the next run's embedding sees the change and this stage then describes the new content), or not
        decodable (IMAGE_MAX_DECODE_MB bounds the decode as in the embedding run)."""
        try:
            data = self.library.read_bytes(photo.paths[0])
        except NotInLibrary as exc:
            return f"cannot read: {exc.reason}"
        if content_hash(data) != photo.content_hash:
            return "changed since it was indexed: run the indexer again"
        try:
            image, _, _ = load_image(data, draft_size(self.options.max_pixels))
        except BadImage as exc:
            return str(exc)
        return image

    def fail(self, photo: SameContent, reason: str) -> None:
        for path in photo.paths:
            self.summary.describe_failed += 1
            self.summary.failures.append((path, f"cannot describe: {reason}"))


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
