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
from core.library import is_video_name
from indexer.decode import Decoded, decode_entry
from indexer.moments import MEDIA_IMAGE, copied_points, moment_points
from indexer.plan import Plan, make_plan
from indexer.scan import FileEntry, scan_library
from indexer.video_frames import VideoSampling
from runners.clip import encode_isolated
from store.interface import Point, VectorStore, description_of, folders_of, point_id

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
    video: VideoSampling | None = None  # which frames of a video are embedded (None: the VIDEO_* settings)


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
        self.video = self.options.video or VideoSampling.from_settings()

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
        self.summary.removed += len({str(plan.existing[pid].get("path", pid)) for pid in plan.stale_ids})  # files
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
            if pid not in plan.existing:
                continue  # a video: its moments were written with every field
            folders = folders_of(entry.rel_path)
            if plan.existing[pid].get("folders") != folders:
                updates[pid] = {"folders": folders}
            if "media" not in plan.existing[pid]:  # the `media` search filter (indexed before videos were)
                updates.setdefault(pid, {})["media"] = MEDIA_IMAGE
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
            videos: deque[Future[Decoded]] = deque()  # a video's frames weigh what many photos do
            items = iter(entries)
            for entry in items:
                pending.append(pool.submit(decode_entry, entry, self.options.draft_size, needs_image, self.video))
                if is_video_name(entry.rel_path):
                    videos.append(pending[-1])
                while len(pending) >= window or len(videos) > self.options.workers:
                    if videos and videos[0] is pending[0]:
                        videos.popleft()
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
        old = self.plan.ids_of(item.entry.rel_path)
        if item.gone:  # deleted since the scan: as if the scan had not seen it
            if old:
                self.delete_ids += old
                self.summary.removed += 1
            return
        if item.error is not None:
            self.fail(item.entry.rel_path, item.error)
            self.delete_ids += old  # its old vectors no longer match the file
            return
        source = self.plan.reuse_source(item.entry, item.content_hash)
        if source is not None and item.is_video:
            self.reuse_moments(item, source)
        elif source is not None:
            self.to_reuse.append((item, source))
            if len(self.to_reuse) >= self.options.batch_size:
                self.flush_reuse()
        else:
            self.to_embed.append(item)
            if sum(len(d.frames or [0]) for d in self.to_embed) >= self.options.batch_size:
                self.flush_embed()  # a video's frames fill the batch as photos do

    def count_write(self, item: Decoded, same_content: bool) -> None:
        if not self.plan.ids_of(item.entry.rel_path):
            self.summary.added += 1
        elif same_content:
            self.summary.unchanged += 1
        else:
            self.summary.updated += 1

    def flush_embed(self) -> None:
        batch, self.to_embed = self.to_embed, []
        if not batch:
            return
        embedded = self.timed("embed", embed_decoded, self.encoder, batch, self.options.batch_size)
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
        points, written, failed = embedded_points(results, self.encoder.model_id, self.video.merge_cosine)
        for item, reason in failed:  # listed; its batch-mates are written as if it were not there
            self.take(Decoded(item.entry, item.content_hash, error=reason))
        self.timed("write", self.store.upsert, points)
        self.drop_old_moments(written, points)
        self.count_written(written)

    def drop_old_moments(self, written: list[Decoded], points: list[Point]) -> None:
        """A video written again with fewer moments than before: its old extra moments go."""
        kept = {point.id for point in points}
        for item in written:
            if item.is_video:
                self.delete_ids += [pid for pid in self.plan.ids_of(item.entry.rel_path) if pid not in kept]

    def reuse_moments(self, item: Decoded, source: str) -> None:
        """A video whose content has moments already (its own, touched; a copy's; a rename's): copied over."""
        ids = self.plan.moments.get(str(self.plan.existing[source].get("path", "")), [])
        vectors = self.timed("write", self.store.vectors, ids)
        if len(vectors) < len(ids):  # gone meanwhile: embed it after all
            self.retry_embed(item)
            return
        points = copied_points(item, [(self.plan.existing[pid], vectors[pid]) for pid in ids])
        self.timed("write", self.store.upsert, points)
        self.drop_old_moments([item], points)
        self.count_write(item, same_content=ids == self.plan.ids_of(item.entry.rel_path))
        self.summary.reused += 1

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
        fresh = decode_entry(item.entry, self.options.draft_size, video=self.video)
        if fresh.image is not None or fresh.frames:
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
        "media": MEDIA_IMAGE,
    }
    return Point(point_id(entry.rel_path), np.asarray(vector, dtype=np.float32), payload)


def embedded_points(results: list[tuple[Decoded, np.ndarray | None, str | None]], model_id: str,
                    min_cosine: float | None = None) -> tuple[list[Point], list[Decoded], list[tuple[Decoded, str]]]:
    """The points of freshly embedded files, the files they are for, and the files that got no usable vector
    (with the reason the summary lists). A video's vectors (a row a frame) become its moments' points, merged
    at `min_cosine` (None: VIDEO_MERGE_COSINE)."""
    points, written, failed = [], [], []
    for item, vector, reason in results:
        if item.frames is not None and vector is not None:
            found = video_points(item, vector, model_id, min_cosine)
            if found:
                points += found
                written.append(item)
            else:
                failed.append((item, f"cannot embed: {reason or 'no frame embedded'}"))
        elif reason is None and vector is not None and np.all(np.isfinite(vector)):
            points.append(build_point(item, vector, item.width, item.height, model_id))
            written.append(item)
        else:
            failed.append((item, f"cannot embed: {reason or 'no vector'}"))
    return points, written, failed


def video_points(item: Decoded, vectors: np.ndarray, model_id: str, min_cosine: float | None) -> list[Point]:
    """A video's moments from the vectors of its frames; frames that got none are left out."""
    rows = np.asarray(vectors, dtype=np.float32).reshape(len(item.frames or []), -1)
    good = [i for i in range(len(rows)) if np.all(np.isfinite(rows[i]))]
    if not good:
        return []
    cosine = VideoSampling.from_settings().merge_cosine if min_cosine is None else min_cosine
    times = [(item.frames or [])[i][0] for i in good]
    return moment_points(item, times, rows[good], model_id, cosine)


def embed_decoded(encoder: ImageEncoder, batch: list[Decoded], most: int | None = None
                  ) -> list[tuple[np.ndarray | None, str | None]]:
    """Each decoded file's vector (or why it has none): the embed stage of both engines. A video's frames go
    in the same batch as the photos; its "vector" is a row per frame (NaN where a frame failed). `most`: CLIP
    is given at most this many images at once (a long clip's frames in several calls)."""
    images: list[Image.Image] = []
    for d in batch:  # an engine hands over decoded images only
        images += [frame for _, frame in d.frames] if d.frames is not None else [d.image] if d.image is not None else []
    vectors, reasons = encode_chunks(encoder, images, most or len(images) or 1)
    out: list[tuple[np.ndarray | None, str | None]] = []
    at = 0
    for d in batch:
        if d.frames is None:
            out.append((vectors[at], reasons[at]))
            at += 1
            continue
        count = len(d.frames)
        failed = [r for r in reasons[at:at + count] if r]
        out.append((vectors[at:at + count], failed[0] if failed and len(failed) == count else None))
        at += count
    return out


def encode_chunks(encoder: ImageEncoder, images: list[Image.Image], most: int) -> tuple[np.ndarray, list[str | None]]:
    """encode_each over `most` images at a time: what CLIP holds at once stays bounded."""
    if len(images) <= most:
        return encode_each(encoder, images)
    parts = [encode_each(encoder, images[start:start + most]) for start in range(0, len(images), most)]
    return np.concatenate([vectors for vectors, _ in parts]), [r for _, reasons in parts for r in reasons]


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

