"""The Ray engine (`python -m indexer --engine ray`, INDEX_ENGINE=ray): the files to check decoded and embedded
on a Ray cluster with Ray Data, the run itself (scan, plan, summary, deletes) on the driver as with the local
engine (indexer/pipeline.py).

The pipeline: the plan's files -> decode (tasks: read, hash, decode; a file whose content the collection
already holds is not decoded) -> embed (an actor pool, one CLIP model per actor, GPUs when the cluster has
them) -> write. Every stage calls the functions the local engine calls (decode_entry, embed_decoded,
embedded_points, build_point; payload stages: decode_photo, produce), so both engines write the same points.

Writes: with the embedded store held by this process, the driver is its one writer and writes the results in
batches as they stream in. With QDRANT_URL, or with a running service holding the embedded store (its
write path, reachable from this machine's workers), Ray write tasks write in parallel through PointSink,
at most INDEX_RAY_WRITERS at once; a failed write raises (Ray retries the task; the run then fails). Point ids
are deterministic (uuid5 of the path), so a retried write or a rerun after a crash writes the same points.

Every node must see the library at the same path and import this project (the same image on every node).
Ray is imported only here, and this module only with `--engine ray`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.decode import Decoded, decode_entry
from indexer.payload_stage import Outcome, PayloadKind, PixelBudget, SameContent, decode_photo, produce
from indexer.pipeline import ImageEncoder, Indexer, embed_decoded, embedded_points
from indexer.plan import Plan
from indexer.scan import FileEntry
from store.interface import StoreError, point_id

if TYPE_CHECKING:
    from config import Settings
    from store.interface import VectorStore

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent  # the project, importable by every worker (PYTHONPATH)


@dataclass
class RayOptions:
    batch_size: int = 32  # files per decode task, per embed call and per write
    embed_actors: int = 1  # CLIP actors (one model each)
    describe_actors: int = 1  # describer actors (one VLM each)
    writers: int = 2  # write tasks in flight (workers that write: QDRANT_URL or a running service)
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_actor: float = 1.0  # CPUs each model actor holds (its torch threads)
    progress: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, batch_size: int, progress: bool) -> RayOptions:
        return cls(batch_size=batch_size, embed_actors=settings.index_ray_embed_actors,
                   describe_actors=settings.index_ray_describe_actors, writers=settings.index_ray_writers,
                   gpus_per_actor=settings.index_ray_gpus_per_actor,
                   cpus_per_actor=settings.index_ray_cpus_per_actor, progress=progress)


def no_usage_reports() -> None:
    """A self-hosted indexer sends nothing out unasked: Ray's usage reports, and Ray Data's driver thread that
    polls Prometheus for them every 10 s for the rest of the process, stay off unless the user turns them on
    (RAY_USAGE_STATS_ENABLED=1). Before ray.init and the first Dataset."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def connect() -> bool:
    """Join the cluster RAY_ADDRESS names (Ray reads it), or start a local Ray for this run when it is unset.
    True when this call started Ray (the caller shuts it down)."""
    no_usage_reports()
    import ray

    if ray.is_initialized():
        return False
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": path}}, include_dashboard=False,
             logging_level=logging.WARNING)
    return True


def configure(progress: bool) -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # results in plan order: the summary lists as locally
    context.enable_progress_bars = progress


def gpus(options: RayOptions) -> float:
    if options.gpus_per_actor is not None:
        return options.gpus_per_actor
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


# --- the stages (run on workers) ------------------------------------------------------------------


@dataclass(frozen=True)
class ReuseHints:
    """What a decode task needs of the plan to skip decoding content whose vector is reused (Plan.reuse_source):
    the content hashes other points hold, and each checked file's own point's hash."""

    sources: frozenset[str]
    own: dict[str, str]

    @classmethod
    def of(cls, plan: Plan, entries: list[FileEntry]) -> ReuseHints:
        own = {entry.rel_path: str(plan.existing.get(point_id(entry.rel_path), {}).get("content_hash") or "")
               for entry in entries}
        return cls(frozenset(plan.by_hash), own)

    def needs_image(self, entry: FileEntry, digest: str) -> bool:
        return self.own.get(entry.rel_path) != digest and digest not in self.sources


def decode_batch(batch: dict[str, Any], draft_size: int | None, hints: ReuseHints) -> dict[str, Any]:
    """Decode task: read, hash and decode each file (decode_entry); content whose vector the plan reuses is
    not decoded."""
    needs_image = hints.needs_image

    return {"decoded": [decode_entry(entry, draft_size, needs_image) for entry in batch["entry"]]}


@dataclass
class Embedded:
    """One file's outcome as it leaves the embed stage: one pickled column, so every block has the same schema."""

    item: Decoded  # without its pixels
    vector: np.ndarray | None
    reason: str | None  # why it got no vector
    embedded: bool  # it went through the model (else: reused content, a failure or a file gone)


Row = tuple[Decoded, np.ndarray | None, str | None, bool]


class EmbedActor:
    """One CLIP model per actor, kept loaded: embeds each decoded image (embed_decoded) and passes the rest on."""

    def __init__(self, load: Callable[[], ImageEncoder]) -> None:
        self.encoder = load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        items: list[Decoded] = list(batch["decoded"])
        todo = [item for item in items if item.image is not None]
        results = iter(embed_decoded(self.encoder, todo) if todo else [])
        out = []
        for item in items:
            vector, reason = next(results) if item.image is not None else (None, None)
            out.append(Embedded(item, vector, reason, item.image is not None))
            item.image = None  # what leaves the actor is small: no pixels
        return {"result": out}


def rows(batch: dict[str, Any]) -> Iterator[Row]:
    for result in batch["result"]:
        yield result.item, result.vector, result.reason, result.embedded


@dataclass
class Written:
    """What one write task did: the files whose points it wrote, and every other row, for the driver."""

    written: list[Decoded]
    passed: list[Row]


def point_sink(open_writer: Callable[[], VectorStore], model_id: str, batch_size: int) -> Any:
    """A ray.data.Datasink writing the freshly embedded points through `open_writer()`'s store, `batch_size`
    points an upsert. A failed write raises: Ray retries the task, and the run fails if it keeps failing."""
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class Sink(Datasink[Written]):
        def __init__(self) -> None:
            self.results: list[Written] = []

        @property
        def min_rows_per_write(self) -> int:
            return batch_size

        def write(self, blocks: Iterable[Any], ctx: Any) -> Written:
            store = open_writer()
            done = Written([], [])
            try:
                for block in blocks:
                    batch = BlockAccessor.for_block(block).to_batch_format("numpy")
                    todo: list[Row] = []
                    for row in rows(batch):
                        (todo if row[3] else done.passed).append(row)
                    for start in range(0, len(todo), batch_size):
                        chunk = [(item, vector, reason) for item, vector, reason, _ in todo[start:start + batch_size]]
                        points, written, failed = embedded_points(chunk, model_id)
                        store.upsert(points)  # raises on failure: no silent drop
                        done.written += written
                        done.passed += [(item, None, reason, True) for item, reason in failed]
            finally:
                store.close()
            return done

        def on_write_complete(self, write_result: Any) -> None:
            self.results = list(write_result.write_returns)

    return Sink()


def as_store_error(exc: BaseException) -> BaseException:
    """A write task's StoreError (Ray wraps it) as the StoreError it is, so the run exits as a failed local
    write does (exit 1, its message); any other failure as it is."""
    seen: BaseException | None = exc
    while seen is not None:
        cause = getattr(seen, "cause", None)  # a RayTaskError holds the task's own exception here
        if isinstance(cause, StoreError):
            seen = cause
        if isinstance(seen, StoreError):
            return StoreError(f"a write failed, the run stops (rerun to complete it): {seen}")
        seen = seen.__cause__ or seen.__context__
    return exc


# --- the engine (runs on the driver) ---------------------------------------------------------------


def stage_figures(dataset: Any) -> list[dict[str, Any]]:
    """Ray Data's own figures of each stage (operator) of the run that just ended, in pipeline order (the
    summary's `ray_stages`): the rows it took in (a source: the rows it made; a write stage puts out one row
    per task, so rows out would not count photos), busy seconds (its tasks' wall time, summed), their CPU
    seconds, its span (first task started to last one ended) and rows/s over that span. Ray fuses the stages
    that share resources into one operator (on CPU: decode and CLIP). Figures only: a Ray that cannot give
    them is logged, never a failed run."""
    try:
        summary = dataset.get_stats_summary()
    except Exception as exc:  # noqa: BLE001 - the run's result does not depend on its statistics
        log.warning("Ray Data's stage figures are unavailable: %s", exc)
        return []
    figures = []
    for part in lineage(summary):
        for op in part.operators_stats:
            if op.is_sub_operator:
                continue
            rows = int(op.total_input_num_rows or (op.output_num_rows.sum if op.output_num_rows else 0))
            span = float(op.time_total_s)
            figures.append({"stage": op.operator_name, "rows": rows,
                            "seconds": round(float(op.wall_time.sum) if op.wall_time else 0.0, 3),
                            "cpu_seconds": round(float(op.cpu_time.sum) if op.cpu_time else 0.0, 3),
                            "span_seconds": round(span, 3), "rows_per_s": round(rows / span, 1) if span else 0.0})
    return figures


def lineage(summary: Any) -> list[Any]:
    """A DatasetStatsSummary and those of the datasets it was made from, the first one first."""
    return [part for parent in summary.parents for part in lineage(parent)] + [summary]


class DriverStage:
    """The driver's own stage when it is the one writer: handing the results over and writing them (its busy
    and CPU time); the rest of the loop it waits on the pipeline."""

    def __init__(self) -> None:
        self.rows = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def run(self, hand_over: Callable[[Indexer, list[Row]], None], indexer: Indexer, batch: list[Row]) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        hand_over(indexer, batch)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.thread_time() - cpu
        self.rows += len(batch)

    def figures(self, span: float) -> dict[str, Any]:
        return {"stage": "driver: hand over + write", "rows": self.rows, "seconds": round(self.seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3), "span_seconds": round(span, 3),
                "rows_per_s": round(self.rows / span, 1) if span > 0 else 0.0}


class RayEngine:
    """indexer.pipeline.Engine on Ray Data. `load` makes the CLIP encoder (in each actor); `open_writer`,
    when given, opens the store in write tasks (workers write in parallel), else the driver writes."""

    def __init__(self, load: Callable[[], ImageEncoder], options: RayOptions,
                 open_writer: Callable[[], VectorStore] | None = None) -> None:
        self.load = load
        self.options = options
        self.open_writer = open_writer

    def process(self, indexer: Indexer, entries: list[FileEntry]) -> None:
        if not entries:
            return
        dataset = self.embedded(indexer, entries)
        if self.open_writer is None:  # the driver is the one writer: results written as they stream in
            start, driver = time.perf_counter(), DriverStage()
            for batch in self.batches(dataset):
                driver.run(self.hand_over, indexer, batch)
            indexer.timer["ray"] = time.perf_counter() - start
            indexer.summary.ray_stages = stage_figures(dataset) + [driver.figures(indexer.timer["ray"])]
            return
        sink = point_sink(self.open_writer, indexer.encoder.model_id, self.options.batch_size)
        try:  # writes are IO-bound: they take no CPU slot from the actors, `writers` of them at once
            indexer.timed("ray", lambda: dataset.write_datasink(sink, ray_remote_args={"num_cpus": 0},
                                                                concurrency=self.options.writers))
        except Exception as exc:
            raise as_store_error(exc) from exc
        indexer.summary.ray_stages = stage_figures(dataset)
        written = [item for result in sink.results for item in result.written]
        passed = [row for result in sink.results for row in result.passed]
        indexer.count_written(written)
        self.hand_over(indexer, sorted(passed, key=lambda row: row[0].entry.rel_path))

    def batches(self, dataset: Any) -> Iterator[list[Row]]:
        for batch in dataset.iter_batches(batch_size=self.options.batch_size, batch_format="numpy"):
            yield list(rows(batch))

    @staticmethod
    def hand_over(indexer: Indexer, batch: list[Row]) -> None:
        for item, vector, reason, embedded in batch:
            if embedded:
                indexer.take_embedded(item, vector, reason)
            else:  # reused content, a failure or a file gone since the scan: as the local engine takes it
                indexer.take(item)

    def embedded(self, indexer: Indexer, entries: list[FileEntry]) -> Any:
        import ray
        from ray.data import ActorPoolStrategy

        configure(self.options.progress)
        hints = ReuseHints.of(indexer.plan, entries)
        size = self.options.batch_size
        gpu = gpus(self.options)
        # CPU-only actors: decode asks for the actor's CPUs, so Ray fuses it into the CLIP actor (it fuses equal
        # resources only). Decode tasks of their own would wait forever for a CPU once the actors hold them all
        # (INDEX_RAY_CPUS_PER_ACTOR = the node's CPUs). With GPU actors decode runs apart, one CPU a task.
        decode_cpus = self.options.cpus_per_actor if gpu == 0 else 1.0
        return (ray.data.from_items([{"entry": entry} for entry in entries],
                                    override_num_blocks=max(1, min(len(entries) // size, 1000)))
                .map_batches(partial(decode_batch, draft_size=indexer.options.draft_size, hints=hints),
                             batch_size=size, num_cpus=decode_cpus)
                .map_batches(EmbedActor, batch_size=size, fn_constructor_kwargs={"load": self.load},
                             compute=ActorPoolStrategy(size=self.options.embed_actors),
                             num_gpus=gpu, num_cpus=self.options.cpus_per_actor))


# --- the payload stages on Ray ---------------------------------------------------------------------


class PayloadActor:
    """One model per actor (a describer's VLM, a reader's OCR models): decodes a batch of photos and runs the model
    on it (indexer/payload_stage.py: decode_photo, produce)."""

    def __init__(self, load: Callable[[], Any], root: Path, pixels: PixelBudget, kind: PayloadKind) -> None:
        from core.library import Library

        self.model = load()
        self.library = Library(root)
        self.pixels = pixels
        self.kind = kind

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        photos: list[SameContent] = list(batch["photo"])
        decoded = [decode_photo(self.library, photo, self.pixels) for photo in photos]
        outcomes = produce(self.kind, lambda: self.model, decoded)
        return {"photo": photos, "outcome": [json.dumps(outcome) for outcome in outcomes]}


class RayPayloads:
    """A payload stage's engine seam on Ray (indexer/payload_stage.py, PayloadEngine): photos processed on an actor
    pool (INDEX_RAY_DESCRIBE_ACTORS actors; a GPU each for a kind that uses one, when the cluster has them),
    recorded by the driver."""

    def __init__(self, load: Callable[[], Any], options: RayOptions) -> None:
        self.load = load
        self.options = options

    def __call__(self, photos: list[SameContent], root: Path, pixels: PixelBudget, kind: PayloadKind,
                 batch_size: int) -> Iterator[tuple[list[SameContent], list[Outcome]]]:
        if not photos:
            return
        import ray
        from ray.data import ActorPoolStrategy

        configure(self.options.progress)
        dataset = (ray.data.from_items([{"photo": photo} for photo in photos],
                                       override_num_blocks=max(1, min(len(photos) // batch_size, 1000)))
                   .map_batches(PayloadActor, batch_size=batch_size,
                                fn_constructor_kwargs={"load": self.load, "root": root, "pixels": pixels,
                                                       "kind": kind},
                                compute=ActorPoolStrategy(size=self.options.describe_actors),
                                num_gpus=gpus(self.options) if kind.uses_gpu else 0,
                                num_cpus=self.options.cpus_per_actor))
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield list(batch["photo"]), [json.loads(str(outcome)) for outcome in batch["outcome"]]
