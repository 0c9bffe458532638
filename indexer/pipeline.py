"""Runner: embed what changed in batches, upsert in batches, delete what is gone, and report."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from core.images import DRAFT_SIZE
from indexer.decode import Decoded, decode_entry
from indexer.plan import Plan, make_plan
from indexer.scan import FileEntry, scan_library
from runners.clip import encode_isolated
from store.base import Point, VectorStore, description_of, folders_of, point_id

log = logging.getLogger(__name__)


class ImageEncoder(Protocol):
    model_id: str
    dim: int

    def encode_images(self, images: list[Image.Image]) -> np.ndarray: ...


@dataclass
class Summary:
    scanned: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    reused: int = 0  # vectors taken over from a renamed/copied file or a touched file
    payload_updated: int = 0  # unchanged files whose payload gained new fields (no re-embedding)
    # The describe stage (indexer/describe_stage.py, `--describe`): points that got a description this run, of
    # them those copied from a point with the same content (no model call), and photos it could not describe.
    described: int = 0
    descriptions_reused: int = 0
    describe_failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason); paths are always text
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per stage
    # The Ray engine only: Ray Data's figures per stage (indexer/ray_engine.py stage_figures); None elsewhere,
    # and then not in the `--json` summary, which stays as the local engine has always printed it.
    ray_stages: list[dict[str, Any]] | None = None
    # The OCR stage (indexer/ocr_stage.py, `--ocr`): its counts and photos/s (OcrCounts.as_dict); None when it did
    # not run, and then not in the `--json` summary either.
    ocr: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for optional in ("ray_stages", "ocr"):
            if out[optional] is None:
                del out[optional]
        return out


@dataclass
class IndexOptions:
    batch_size: int = 32
    workers: int = 4
    draft_size: int | None = DRAFT_SIZE  # JPEGs decode at a reduced scale no smaller than this
    progress: bool = True
    # Watch mode (indexer/watch.py): a run that finds no file while the collection holds points takes
    # the library for an unmounted one and removes nothing; `stop` asked between batches ends it early.
    keep_if_empty: bool = False
    stop: Callable[[], bool] | None = None


class Engine(Protocol):
    """The seam between the run (scan, plan, summary, deletes: Indexer) and the engine that decodes and embeds
    the files to check: this process (LocalEngine) or a Ray cluster (indexer/ray_engine.py). An engine hands
    each file's outcome back through `indexer.take` (decoded, to embed or reuse here) or
    `indexer.take_embedded` (embedded elsewhere), or writes embedded points itself and reports them with
    `indexer.count_written`."""

    def process(self, indexer: Indexer, entries: list[FileEntry]) -> None: ...


class LocalEngine:
    """Decode in a thread pool, embed in this process (the default: imports nothing more)."""

    def process(self, indexer: Indexer, entries: list[FileEntry]) -> None:
        for decoded in indexer.decoded(entries):
            indexer.take(decoded)
            if indexer.options.stop is not None and indexer.options.stop():
                break  # what was decoded is still written by the run: no batch is left half done


class Indexer:
    """One indexing run of `root` into `store` with `encoder`."""

    def __init__(self, store: VectorStore, encoder: ImageEncoder, options: IndexOptions | None = None,
                 engine: Engine | None = None) -> None:
        self.store = store
        self.encoder = encoder
        self.options = options or IndexOptions()
        self.engine = engine or LocalEngine()
        self.summary = Summary()
        self.to_embed: list[Decoded] = []
        self.to_reuse: list[tuple[Decoded, str]] = []
        self.embedded: list[tuple[Decoded, np.ndarray | None, str | None]] = []  # from an engine's embedders
        self.delete_ids: list[str] = []
        self.timer: dict[str, float] = {}

    def run(self, root: Path, hold: Collection[str] = ()) -> Summary:
        """`hold`: library names left as they are, neither indexed nor removed (watch mode's files
        still being written)."""
        unreadable: list[tuple[str, str]] = []
        refused: list[tuple[str, str]] = []  # image files the library rule refuses (core/library.py)
        entries = self.timed("scan", scan_library, Path(root), unreadable, refused)
        entries = [entry for entry in entries if entry.rel_path not in hold]
        self.summary.scanned = len(entries) + len(refused)
        payloads = self.timed("plan", lambda: dict(self.store.payloads()))
        if self.options.keep_if_empty and payloads and not (entries or refused or unreadable or hold):
            unreadable.append((".", "the library holds no files (not mounted?): its points are kept"))
        for folder, reason in unreadable:  # reported; the points under it are kept
            self.fail(folder + "/", reason)
        for name, reason in refused:  # reported; skipped like a missing file
            self.fail(name, reason)
        plan = make_plan(entries, payloads, self.encoder.model_id, [folder for folder, _ in unreadable], hold)
        self.plan = plan
        self.summary.unchanged = len(plan.unchanged)
        space_problem = getattr(self.store, "space_problem", None)  # the embedded store checks its disk
        problem = space_problem(len(plan.check)) if space_problem is not None and plan.check else None
        if problem:
            log.warning("%s", problem)
        self.timed("write", self.add_missing_fields, plan)
        self.engine.process(self, plan.check)
        self.flush_embedded()
        self.flush_reuse()  # may hand files back to embedding, so it goes first
        self.flush_embed()
        self.delete_ids += plan.stale_ids
        self.summary.removed += len(plan.stale_ids)
        if self.delete_ids:
            self.timed("write", self.store.delete, sorted(set(self.delete_ids)))
        self.timed("finish", self.store.finish)
        self.summary.seconds = {k: round(v, 3) for k, v in self.timer.items()}
        return self.summary

    def add_missing_fields(self, plan: Plan) -> None:
        """Points indexed before a payload field existed get it now, vectors untouched."""
        updates: dict[str, dict[str, Any]] = {}
        for entry in plan.unchanged:
            pid = point_id(entry.rel_path)
            folders = folders_of(entry.rel_path)
            if plan.existing[pid].get("folders") != folders:
                updates[pid] = {"folders": folders}
        self.store.set_payloads(updates)
        self.summary.payload_updated = len(updates)

    def timed(self, stage: str, func: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args)
        finally:
            self.timer[stage] = self.timer.get(stage, 0.0) + time.perf_counter() - start

    def decoded(self, entries: list[FileEntry]) -> Iterator[Decoded]:
        """Decode in a worker pool, in order, with a bounded number of files in flight."""
        window = max(2 * self.options.batch_size, 2 * self.options.workers)
        needs_image = self.needs_image
        bar = progress_bar(len(entries), self.options.progress)
        with ThreadPoolExecutor(self.options.workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[Decoded]] = deque()
            items = iter(entries)
            for entry in items:
                pending.append(pool.submit(decode_entry, entry, self.options.draft_size, needs_image))
                if len(pending) >= window:
                    yield self.wait(pending.popleft())
                    bar.update(1)
            while pending:
                yield self.wait(pending.popleft())
                bar.update(1)
        bar.close()

    def wait(self, future: Future[Decoded]) -> Decoded:
        return self.timed("decode_wait", future.result)

    def needs_image(self, entry: FileEntry, digest: str) -> bool:
        return self.plan.reuse_source(entry, digest) is None

    def fail(self, path: str, reason: str) -> None:
        self.summary.failed += 1
        self.summary.failures.append((path, reason))

    def take(self, item: Decoded) -> None:
        pid = point_id(item.entry.rel_path)
        if item.gone:  # deleted since the scan: as if the scan had not seen it
            if pid in self.plan.existing:
                self.delete_ids.append(pid)
                self.summary.removed += 1
            return
        if item.error is not None:
            self.fail(item.entry.rel_path, item.error)
            if pid in self.plan.existing:
                self.delete_ids.append(pid)  # its old vector no longer matches the file
            return
        source = self.plan.reuse_source(item.entry, item.content_hash)
        if source is not None:
            self.to_reuse.append((item, source))
            if len(self.to_reuse) >= self.options.batch_size:
                self.flush_reuse()
        else:
            self.to_embed.append(item)
            if len(self.to_embed) >= self.options.batch_size:
                self.flush_embed()

    def count_write(self, item: Decoded, same_content: bool) -> None:
        pid = point_id(item.entry.rel_path)
        if pid not in self.plan.existing:
            self.summary.added += 1
        elif same_content:
            self.summary.unchanged += 1
        else:
            self.summary.updated += 1

    def flush_embed(self) -> None:
        batch, self.to_embed = self.to_embed, []
        if not batch:
            return
        embedded = self.timed("embed", embed_decoded, self.encoder, batch)
        self.write_embedded([(item, vector, reason) for item, (vector, reason) in zip(batch, embedded, strict=True)])

    def take_embedded(self, item: Decoded, vector: np.ndarray | None, reason: str | None) -> None:
        """A file an engine embedded elsewhere: written here in batches, as flush_embed writes its own."""
        self.embedded.append((item, vector, reason))
        if len(self.embedded) >= self.options.batch_size:
            self.flush_embedded()

    def flush_embedded(self) -> None:
        batch, self.embedded = self.embedded, []
        if batch:
            self.write_embedded(batch)

    def write_embedded(self, results: list[tuple[Decoded, np.ndarray | None, str | None]]) -> None:
        points, written, failed = embedded_points(results, self.encoder.model_id)
        for item, reason in failed:  # listed; its batch-mates are written as if it were not there
            self.take(Decoded(item.entry, item.content_hash, error=reason))
        self.timed("write", self.store.upsert, points)
        self.count_written(written)

    def count_written(self, items: list[Decoded]) -> None:
        """Files whose freshly embedded points were written (by this process or by an engine's writers)."""
        for item in items:
            self.count_write(item, same_content=False)

    def flush_reuse(self) -> None:
        batch, self.to_reuse = self.to_reuse, []
        if not batch:
            return
        vectors = self.timed("write", self.store.vectors, sorted({src for _, src in batch}))
        points, written, descriptions = [], [], {}
        for item, source in batch:
            if source not in vectors:  # gone meanwhile: embed it after all
                self.retry_embed(item)
                continue
            src = self.plan.existing[source]
            points.append(build_point(item, vectors[source], int(src.get("width", 0)), int(src.get("height", 0)),
                                      self.encoder.model_id))
            written.append((item, source))
            if src.get("described_by"):  # the same content: its description holds too (an upsert drops it)
                descriptions[points[-1].id] = description_of(src)
        self.timed("write", self.store.upsert, points)
        if descriptions:  # a kill before this leaves them undescribed: the describe stage copies them back
            self.timed("write", self.store.set_descriptions, descriptions)
        for item, source in written:  # counted once written, as in flush_embed
            self.count_write(item, same_content=source == point_id(item.entry.rel_path))
            self.summary.reused += 1

    def retry_embed(self, item: Decoded) -> None:
        fresh = decode_entry(item.entry, self.options.draft_size)
        if fresh.image is not None:
            self.to_embed.append(fresh)
        else:
            self.take(fresh)


def build_point(item: Decoded, vector: np.ndarray, width: int, height: int, model_id: str) -> Point:
    """The point of a decoded file (both engines build every point here)."""
    entry = item.entry
    payload = {
        "path": entry.rel_path,
        "content_hash": item.content_hash,
        "size": entry.size,
        "mtime": entry.mtime,
        "width": width,
        "height": height,
        "indexed_at": time.time(),
        "model_id": model_id,
        "folders": folders_of(entry.rel_path),
    }
    return Point(point_id(entry.rel_path), np.asarray(vector, dtype=np.float32), payload)


def embedded_points(results: list[tuple[Decoded, np.ndarray | None, str | None]], model_id: str
                    ) -> tuple[list[Point], list[Decoded], list[tuple[Decoded, str]]]:
    """The points of freshly embedded files, the files they are for, and the files that got no usable vector
    (with the reason the summary lists)."""
    points, written, failed = [], [], []
    for item, vector, reason in results:
        if reason is None and vector is not None and np.all(np.isfinite(vector)):
            points.append(build_point(item, vector, item.width, item.height, model_id))
            written.append(item)
        else:
            failed.append((item, f"cannot embed: {reason or 'no vector'}"))
    return points, written, failed


def embed_decoded(encoder: ImageEncoder, batch: list[Decoded]) -> list[tuple[np.ndarray | None, str | None]]:
    """Each decoded file's vector (or why it has none): the embed stage of both engines."""
    images = [d.image for d in batch if d.image is not None]  # an engine hands over decoded images only
    vectors, reasons = encode_each(encoder, images)
    return list(zip(vectors, reasons, strict=True))


def encode_each(encoder: ImageEncoder, images: list[Image.Image]) -> tuple[np.ndarray, list[str | None]]:
    """Vectors and per-image failure reasons: the encoder's own isolation when it has one
    (ClipEncoder.encode_images_each gives the reasons), else a failing batch is retried image by image."""
    each = getattr(encoder, "encode_images_each", None)
    if each is not None:
        vectors, reasons = each(images)
        return vectors, reasons
    return encode_isolated(encoder.encode_images, images, encoder.dim)


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def progress_bar(total: int, enabled: bool, stage: str = "indexing") -> Any:
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=stage, dynamic_ncols=True)

