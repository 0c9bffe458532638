"""`python -m indexer`: fill the Qdrant collection from the image library (see docs/indexing.md)."""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np
from PIL import Image

from config import Settings, load_settings_or_exit
from indexer.pipeline import Engine, ImageEncoder, Indexer, IndexOptions, Summary, encode_each
from store import open_store_for_writing
from store.interface import CollectionInfo, ModelMismatchError, StoreError, StoreLockedError, VectorStore

if TYPE_CHECKING:
    from indexer.ocr_stage import LineReader
    from indexer.payload_stage import PayloadEngine
    from indexer.ray_engine import RayOptions

log = logging.getLogger("indexer")


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m indexer", description=__doc__)
    parser.add_argument("--library", type=Path, default=settings.image_library,
                        help="image folder (default: IMAGE_LIBRARY=%(default)s)")
    parser.add_argument("--recreate", action="store_true",
                        help="drop the collection and index from scratch (needed to change CLIP_MODEL)")
    parser.add_argument("--batch-size", type=int, default=settings.index_batch_size,
                        help="images per embedding/upsert batch (INDEX_BATCH_SIZE=%(default)s)")
    parser.add_argument("--workers", type=int, default=settings.index_workers,
                        help="decode threads (INDEX_WORKERS=%(default)s)")
    parser.add_argument("--engine", choices=("local", "ray"), default=settings.index_engine,
                        help="local: this process; ray: a Ray cluster (RAY_ADDRESS, or a local Ray for the run) "
                             "(INDEX_ENGINE=%(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--describe", action="store_true", default=settings.index_describe,
                        help="after indexing, describe every photo not yet described by VQA_MODEL with "
                             "DESCRIBE_PROMPT (INDEX_DESCRIBE; DESCRIBE_BATCH_SIZE per batch)")
    parser.add_argument("--ocr", action=argparse.BooleanOptionalAction, default=settings.index_ocr,
                        help="after indexing, read the text in every photo not yet read by the OCR models "
                             "(INDEX_OCR; OCR_BATCH_SIZE per batch; with --watch, after each pass)")
    parser.add_argument("--watch", action="store_true",
                        help="keep running: index files as they are added, changed, moved or removed "
                             "(WATCH_INTERVAL_S, WATCH_SETTLE_S); SIGTERM or Ctrl-C ends it")
    backup = parser.add_argument_group("backup, migration and checks (docs/backup-and-migration.md)")
    modes = backup.add_mutually_exclusive_group()
    modes.add_argument("--export", metavar="FILE",
                       help="write the collection (vectors, descriptions, model record) to FILE ('-': stdout; "
                            "gzip when FILE ends in .gz) and exit")
    modes.add_argument("--import", dest="import_", metavar="FILE",
                       help="check the archive FILE ('-': stdin) whole, then write its points into the collection")
    modes.add_argument("--verify", action="store_true",
                       help="read the whole collection, check every point, exit 1 naming what is damaged")
    backup.add_argument("--drop-vectors", action="store_true",
                        help="with --import: keep the archive's descriptions only (an archive of another "
                             "CLIP_MODEL); run the indexer first, then import")
    return parser.parse_args(argv)


def backup_mode(args: argparse.Namespace, settings: Settings) -> int:
    """--export, --import or --verify: no library and no model needed (0 ok, 1 failed or damaged)."""
    from indexer.archive import export_archive, import_archive
    from indexer.verify import verify_store
    from runners.clip import model_id_of
    from store import tuning_of

    store = open_store_for_writing(settings)
    try:
        if args.export:
            summary = export_archive(store, args.export, tuning_of(settings), settings.qdrant_collection)
            done = f"exported {summary.points} points ({summary.described} described) to {args.export}"
        elif args.import_:
            summary = import_archive(store, args.import_, model_id_of(settings.clip_model), args.drop_vectors)
            done = (f"imported the descriptions of {summary.described} points ({summary.skipped} skipped: not "
                    "indexed yet, or their file changed)" if args.drop_vectors else
                    f"imported {summary.points} points ({summary.described} described)")
        else:
            report = verify_store(store)
            print("\n".join(report.lines()), file=sys.stdout if report.ok else sys.stderr)
            return 0 if report.ok else 1
    finally:
        store.close()
    out = sys.stderr if args.export == "-" else sys.stdout  # stdout carries the archive
    print(json.dumps(summary.as_dict()) if args.json else f"{done} in {summary.seconds:.1f} s", file=out)
    return 0


def check_model(info: CollectionInfo | None, model_id: str, recreate: bool) -> None:
    """Refuse early (before loading the model) when the collection was made by another model."""
    if info is not None and info.model_id != model_id and not recreate:
        raise ModelMismatchError(mismatch_message(info.model_id, model_id))


def mismatch_message(stored: str, wanted: str) -> str:
    return (f"the collection holds vectors made by {stored!r}, but CLIP_MODEL is {wanted!r}. "
            f"Set CLIP_MODEL back to {stored!r}, or run `python -m indexer --recreate` to re-embed "
            f"the library with the new model.")


class LazyEncoder:
    """Stands in for the encoder of an existing collection; loads the real one on first use."""

    def __init__(self, model_id: str, dim: int, load: Callable[[], ImageEncoder]) -> None:
        self.model_id = model_id
        self.dim = dim
        self.load = load
        self.encoder: ImageEncoder | None = None

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        if self.encoder is None:
            self.encoder = self.load()
        return self.encoder.encode_images(images)

    def encode_images_each(self, images: list[Image.Image]) -> tuple[np.ndarray, list[str | None]]:
        """The real encoder's per-image isolation (with reasons), as indexer.pipeline.encode_each uses it."""
        if self.encoder is None:
            self.encoder = self.load()
        return encode_each(self.encoder, images)


def library_problem(library: Path) -> str | None:
    """Why `library` cannot be indexed, or None."""
    if not library.is_dir():
        return "is not a folder"
    try:
        with os.scandir(library):
            pass
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def print_summary(summary: Summary, as_json: bool, out: TextIO | None = None) -> None:
    """The run's summary on `out` (stdout). Any file name prints, whatever the console's encoding:
    JSON falls back to \\u escapes, text shows control characters (a newline in a name) escaped."""
    out = out or sys.stdout
    utf8 = (getattr(out, "encoding", None) or "").lower().replace("-", "") == "utf8"
    if as_json:
        print(json.dumps(summary.as_dict(), ensure_ascii=not utf8), file=out)
        return
    if isinstance(out, io.TextIOWrapper):
        out.reconfigure(errors="backslashreplace")
    print(f"scanned {summary.scanned} | added {summary.added} | updated {summary.updated} | "
          f"removed {summary.removed} | unchanged {summary.unchanged} | failed {summary.failed} "
          f"(vectors reused: {summary.reused}; payloads completed: {summary.payload_updated})", file=out)
    if summary.ocr is not None:
        ocr = summary.ocr
        print(f"read text {ocr['read']} (copied from the same content: {ocr['reused']}; with text: "
              f"{ocr['with_text']}, {ocr['lines']} lines) | ocr failed {ocr['failed']} | "
              f"{ocr['photos_per_s']:.2f} photos/s", file=out)
    if summary.described or summary.describe_failed or "describe" in summary.seconds:
        print(f"described {summary.described} (copied from the same content: {summary.descriptions_reused}) | "
              f"describe failed {summary.describe_failed}", file=out)
    for path, reason in summary.failures:
        print(f"  failed: {printable(path)}: {reason}", file=out)
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.seconds.items()), file=out)
    for stage in summary.ray_stages or []:
        print(f"ray stage {stage['stage']}: {stage['rows']} rows, busy {stage['seconds']:.2f} s over "
              f"{stage['span_seconds']:.2f} s, {stage['rows_per_s']:.1f} rows/s", file=out)


def printable(name: str) -> str:
    """A name on one line: control characters (newline, tab...) as Python escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def describe(store: VectorStore, library: Path, settings: Settings, options: IndexOptions, summary: Summary,
             ray: RayOptions | None = None) -> None:
    """The describe stage after the embedding run; VQA_MODEL is loaded only if a photo needs the model
    (with `ray`: in each describer actor of the cluster)."""
    from indexer.describe_stage import DescribeStage, pixel_budget
    from indexer.payload_stage import PayloadOptions
    from runners.vlm import Describer, described_by_of, open_describer

    def load() -> Describer:
        return open_describer(settings)

    stage_options = PayloadOptions(batch_size=settings.describe_batch_size, workers=options.workers,
                                   progress=options.progress,
                                   pixels=pixel_budget(settings.describe_max_pixels, settings.vqa_max_pixels))
    engine = payload_engine(load, ray)
    DescribeStage(store, library, described_by_of(settings), load, summary, stage_options, engine).run()


def read_text(store: VectorStore, library: Path, settings: Settings, options: IndexOptions, summary: Summary,
              ray: RayOptions | None = None, stop: Callable[[], bool] | None = None,
              reader: Callable[[], LineReader] | None = None) -> None:
    """The OCR stage after the embedding run (indexer/ocr_stage.py); the OCR models are loaded only if a photo needs
    them (with `ray`: in each reader actor of the cluster; `reader`: one made once for every watch pass)."""
    from indexer.ocr_stage import OcrStage, ocr_options
    from runners.ocr import ocr_by_of, open_reader

    def load() -> LineReader:
        return open_reader(settings)

    load = reader or load
    stage_options = ocr_options(batch_size=settings.ocr_batch_size, workers=min(options.workers, 4),
                                progress=options.progress, max_pixels=settings.ocr_max_pixels, stop=stop)
    OcrStage(store, library, ocr_by_of(settings), load, summary, stage_options, payload_engine(load, ray)).run()


def payload_engine(load: Callable[[], object], ray: RayOptions | None) -> PayloadEngine | None:
    """Where a payload stage runs its model: here (None), or on a Ray actor pool."""
    if ray is None:
        return None
    from indexer.ray_engine import RayPayloads

    return RayPayloads(load, ray)


def ray_engine(settings: Settings, store: VectorStore, load: Callable[[], ImageEncoder], options: RayOptions
               ) -> Engine:
    """The Ray engine. The embedded store held by this process has one writer, this driver; any other store
    (QDRANT_URL, or a running service's write path) is opened by the write tasks, which write in parallel."""
    from indexer.ray_engine import RayEngine
    from store.qdrant_edge import EdgeStore

    def open_writer() -> VectorStore:
        return open_store_for_writing(settings)

    return RayEngine(load, options, None if isinstance(store, EdgeStore) else open_writer)


def run(argv: list[str] | None = None) -> int:
    settings = load_settings_or_exit()
    args = parse_args(argv, settings)
    if args.drop_vectors and not args.import_:
        print("error: --drop-vectors goes with --import", file=sys.stderr)
        return 2
    if args.export or args.import_ or args.verify:
        try:
            return backup_mode(args, settings)
        except (ModelMismatchError, StoreLockedError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # the archive's disk is full, or its folder cannot be written
            where = args.export or "the spool file (TMPDIR) of the archive read from stdin"
            print(f"error: cannot write {where}: {exc.strerror or exc}. Nothing was left half-written; "
                  "free some space (or choose another place) and run it again.", file=sys.stderr)
            return 1
    problem = library_problem(args.library)
    if problem and not args.watch:  # watch mode waits for a library that is not mounted yet
        print(f"error: image library {args.library} {problem} (set IMAGE_LIBRARY or --library)", file=sys.stderr)
        return 2
    from runners.fidelity import RuntimeRefused
    from runners.hub import ModelNotFoundError

    try:
        # With the embedded store held by a running service, this writes through that service.
        store = open_store_for_writing(settings)
        info = store.info()  # an unreachable server fails here, before the CLIP code is even imported
        from runners.clip import ClipEncoder, model_id_of, open_clip

        model_id = model_id_of(settings.clip_model)
        check_model(info, model_id, args.recreate)

        def load() -> ClipEncoder:  # as the CLIP runner loads it: same model, same CLIP_RUNTIME
            return open_clip(settings)

        # The model (seconds to import and load) is loaded only once a file needs embedding.
        encoder = LazyEncoder(model_id, info.dim, load) if info and not args.recreate else load()
        store.ensure_collection(encoder.model_id, encoder.dim, recreate=args.recreate)
        check = getattr(store, "check", None)  # a damaged store is named now, not left answering wrongly
        if check is not None:
            check()
        options = IndexOptions(batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress)
        if args.watch:
            from indexer.watch import watch_until_signal

            if args.engine == "ray":
                log.warning("--watch runs in this process: --engine ray is for whole runs")
            if args.describe:
                log.warning("--watch does not describe photos: run `python -m indexer --describe` for that")
            after = None
            if args.ocr:
                from runners.ocr import open_reader

                @functools.cache
                def reader() -> LineReader:  # loaded once, when a pass first has a photo to read
                    return open_reader(settings)

                def after(summary: Summary, stop: Callable[[], bool]) -> None:  # each pass's photos read
                    read_text(store, args.library, settings, replace(options, progress=False), summary, stop=stop,
                              reader=reader)
            try:
                watch_until_signal(store, encoder, args.library, options, settings.watch_interval_s,
                                   settings.watch_settle_s, settings.watch_events, after)
            finally:
                store.close()
            return 0
        ray = None
        if args.engine == "ray":  # Ray is imported by this engine only
            from indexer.ray_engine import RayOptions

            ray = RayOptions.from_settings(settings, args.batch_size, options.progress)
        started = False
        try:
            engine = None
            if ray is not None:
                from indexer.ray_engine import connect

                started = connect()
                engine = ray_engine(settings, store, load, ray)
            summary = Indexer(store, encoder, options, engine).run(args.library)
            if args.ocr:  # before describing: it is fast, so the words in photos are searchable sooner
                read_text(store, args.library, settings, options, summary, ray)
            if args.describe:
                describe(store, args.library, settings, options, summary, ray)
        finally:
            if started:
                import ray as ray_module

                ray_module.shutdown()
        store.close()
    # exit 2, as docs/indexing.md says (RuntimeRefused: an explicit CLIP_RUNTIME that cannot be used)
    except (ModelMismatchError, ModelNotFoundError, StoreLockedError, RuntimeRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_summary(summary, args.json)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run())
