"""The Ray engine (indexer/ray_engine.py) on a real two-node Ray cluster (one CPU each, this machine): the same
collection as the local engine (ids, payloads, vectors, descriptions, summary), incremental reruns, workers
writing at once through a running service's write path, a failed write, and a node removed mid-run."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from extreme_images import strip
from helpers.hostile_names import INDEXED, SKIPPED, image_bytes
from helpers.indexing import contents, corrupt_files
from helpers.ray_cluster import ClipLoader, DescriberLoader, FailingWriter, two_node_cluster
from shapes import CLASSES, WORDS, draw_described, make_library

from indexer.describe_stage import DescribeStage
from indexer.payload_stage import PayloadOptions
from indexer.pipeline import Indexer, Summary
from indexer.pipeline import IndexOptions as Options
from indexer.ray_engine import RayEngine, RayOptions, RayPayloads
from runners.clip import ClipEncoder
from store.interface import StoreError, VectorStore
from store.qdrant_edge import EdgeStore

BATCH = 4
MODEL_ID = "tiny-clip"
HOSTILE = [b"new\nline.jpg", b"\xc9\xcf\xba\xa3.jpg", "上海 外滩/夜景 2024.jpg".encode(), b"back\\slash.jpg"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with two_node_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder(str(tiny_clip_dir), "cpu", model_id=MODEL_ID)


def library(root: Path) -> None:
    """Described photos, broken files, hostile names (one refused) and the thin PNG."""
    for i, (shape, color) in enumerate(CLASSES[:6]):
        sub = "album/" if i % 2 else ""
        (root / sub).mkdir(parents=True, exist_ok=True)
        draw_described(shape, color, WORDS[i % len(WORDS)], seed=i).save(root / f"{sub}{shape}_{color}.png")
    corrupt_files(root)
    for seed, raw in enumerate(HOSTILE):
        path = os.path.join(os.fsencode(root), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(image_bytes(raw, seed))
    (root / "thin.png").write_bytes(strip(1, 65_000))
    assert set(HOSTILE) & set(SKIPPED) and set(HOSTILE) & set(INDEXED)


def run(store: VectorStore, encoder: ClipEncoder, root: Path, engine: RayEngine | None = None) -> Summary:
    store.ensure_collection(encoder.model_id, encoder.dim)
    return Indexer(store, encoder, Options(batch_size=BATCH, progress=False), engine).run(root)


def ray_engine(tiny_clip_dir: Path, **options: Any) -> RayEngine:
    open_writer = options.pop("open_writer", None)
    return RayEngine(ClipLoader(tiny_clip_dir, MODEL_ID), RayOptions(batch_size=BATCH, progress=False, **options),
                     open_writer)


def counts(summary: Summary) -> dict[str, Any]:
    """The summary as `--json` prints it, less the seconds and the Ray engine's stage figures; failures in path
    order."""
    out = summary.as_dict()
    out.pop("seconds")
    out.pop("ray_stages", None)
    out["failures"] = sorted(map(tuple, out["failures"]))
    return out


def same_vectors(a: VectorStore, b: VectorStore) -> float:
    """The lowest cosine between the two stores' vectors of the same point (they hold the same ids)."""
    ids = [pid for pid, _ in a.payloads()]
    va, vb = a.vectors(ids), b.vectors(ids)
    assert set(va) == set(vb) == set(ids)
    return min(float(np.dot(va[i], vb[i]) / np.linalg.norm(va[i]) / np.linalg.norm(vb[i])) for i in ids)


def describe(store: VectorStore, root: Path, loader: DescriberLoader, described_by: str,
             engine: RayPayloads | None = None) -> Summary:
    summary = Summary()
    DescribeStage(store, root, described_by, loader, summary, PayloadOptions(batch_size=BATCH, progress=False),
                  engine).run()
    return summary


def test_ray_engine_writes_what_the_local_engine_writes(cluster: Any, encoder: ClipEncoder, tiny_clip_dir: Path,
                                                         tiny_describer_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    library(root)
    local, remote = EdgeStore(tmp_path / "local", "images"), EdgeStore(tmp_path / "ray", "images")
    engine = ray_engine(tiny_clip_dir, embed_actors=2)  # one actor on each node
    first = run(local, encoder, root)
    on_cluster = run(remote, encoder, root, engine)
    assert counts(on_cluster) == counts(first)
    assert first.added == 6 + 3 + 1 and first.failed == 3 + 1  # broken files, the refused name
    assert first.ray_stages is None and "ray_stages" not in first.as_dict()
    # Ray Data's figures per stage: every checked file (all but the refused name) through decode + CLIP (fused
    # on CPU nodes) and the driver, which writes them.
    stages = {stage["stage"]: stage for stage in on_cluster.ray_stages or []}
    embed = next(stage for name, stage in stages.items() if "EmbedActor" in name)
    assert embed["rows"] == stages["driver: hand over + write"]["rows"] == first.scanned - 1
    assert embed["seconds"] > 0 and embed["rows_per_s"] > 0
    assert contents(remote) == contents(local)
    assert same_vectors(local, remote) >= 0.9999

    # The describe stage on its own actor pool: the same descriptions, the same counts.
    loader = DescriberLoader(tiny_describer_dir)
    described_by = loader().described_by
    described = describe(local, root, loader, described_by)
    on_ray = describe(remote, root, loader, described_by, RayPayloads(loader, RayOptions(progress=False)))
    assert (described.described, described.describe_failed) == (9, 1)  # the thin PNG: the model refuses it
    assert counts(on_ray) == counts(described)
    assert contents(remote) == contents(local)
    assert any(p.get("description") for p in contents(remote).values())

    # Changes: a rename (its vector reused: not decoded), a copy of a photo then modified (embedded: its old
    # vector is no source while its file changes), a removal, a new photo.
    os.rename(root / "circle_red.png", root / "renamed.png")
    shutil.copy(root / "album" / "circle_green.png", root / "copy.png")
    (root / "thin.png").unlink()
    draw_described("triangle", "blue", WORDS[0], seed=40).save(root / "new.png")
    draw_described("square", "blue", WORDS[1], seed=41).save(root / "album" / "circle_green.png")
    again = run(local, encoder, root)
    assert counts(run(remote, encoder, root, engine)) == counts(again)
    assert again.reused == 1 and again.removed == 2 and again.added == 3 and again.updated == 1
    assert contents(remote) == contents(local)
    assert same_vectors(local, remote) >= 0.9999

    rerun = run(remote, encoder, root, engine)  # incremental: nothing to do
    assert (rerun.added, rerun.updated, rerun.removed, rerun.unchanged) == (0, 0, 0, 11)
    local.close()
    remote.close()


def test_a_refused_write_fails_the_run(cluster: Any, encoder: ClipEncoder, tiny_clip_dir: Path,
                                       tmp_path: Path) -> None:
    make_library(tmp_path / "lib", n_per_class=1)
    store = EdgeStore(tmp_path / "q", "images")
    with pytest.raises(StoreError, match="a write failed.*disk full"):
        run(store, encoder, tmp_path / "lib", ray_engine(tiny_clip_dir, open_writer=FailingWriter()))
    store.close()


def test_workers_write_at_once_through_the_running_service(cluster: Any, encoder: ClipEncoder,
                                                            tiny_clip_dir: Path, tmp_path: Path) -> None:
    from helpers.served_store import served_edge_over_http

    from config import Settings
    from store import open_store_for_writing

    shapes = make_library(tmp_path / "lib", n_per_class=2)
    with served_edge_over_http(tmp_path / "qdrant") as service:
        settings = Settings(_env_file=None, qdrant_path=tmp_path / "qdrant", qdrant_url=None)  # type: ignore[call-arg]
        driver = open_store_for_writing(settings)  # the service's write path, as the CLI opens it
        assert type(driver).__name__ != "EdgeStore"
        engine = ray_engine(tiny_clip_dir, open_writer=partial(open_store_for_writing, settings), writers=3)
        summary = run(driver, encoder, tmp_path / "lib", engine)
        assert (summary.added, summary.failed) == (len(shapes), 0)
        write = [stage for stage in summary.ray_stages or [] if stage["stage"].startswith("Write")]
        assert [stage["rows"] for stage in write] == [len(shapes)]  # the write tasks' stage, in Ray's figures
        assert service.peak_upserts >= 2  # several write tasks in flight at once
        assert {p["path"] for _, p in driver.payloads()} == set(shapes)
        driver.close()

    local = EdgeStore(tmp_path / "local", "images")
    run(local, encoder, tmp_path / "lib")
    served = EdgeStore(tmp_path / "qdrant", "images")
    assert contents(served) == contents(local) and same_vectors(local, served) >= 0.9999
    served.close()
    local.close()


def test_a_node_removed_mid_run_loses_no_photo(cluster: Any, encoder: ClipEncoder, tiny_clip_dir: Path,
                                               tmp_path: Path) -> None:
    import ray

    shapes = make_library(tmp_path / "lib", n_per_class=3)
    worker = next(iter(cluster.worker_nodes))
    store = EdgeStore(tmp_path / "q", "images")
    outcome: dict[str, Any] = {}

    def index() -> None:
        try:
            outcome["summary"] = run(store, encoder, tmp_path / "lib", ray_engine(tiny_clip_dir, embed_actors=2))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=index)
    thread.start()
    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) > 0:  # both embed actors up: one holds the worker's CPU
        assert time.monotonic() < deadline, "the embed actors did not start"
        time.sleep(0.1)
    cluster.remove_node(worker)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the run did not finish after the node was removed"
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert (summary.added, summary.failed) == (len(shapes), 0)
    assert {p["path"] for _, p in store.payloads()} == set(shapes) and store.count() == len(shapes)
    store.close()
    assert ray.is_initialized()


def test_the_ocr_stage_on_ray_reads_what_it_reads_here(cluster: Any, encoder: ClipEncoder, tmp_path: Path) -> None:
    """RayPayloads (indexer/ray_engine.py): the OCR stage (indexer/ocr_stage.py) on an actor pool of real readers
    writes the lines the local engine writes, with the same counts and failures."""
    from signs import jpeg, sign

    from indexer.ocr_stage import OcrStage, ocr_options
    from runners.ocr import TextReader

    root = tmp_path / "signs"
    root.mkdir()
    for i, words in enumerate(["Golden Dragon", "EXIT 出口", "夜市"]):
        (root / f"s{i}.jpg").write_bytes(jpeg(sign([words], size=(640, 480), seed=70 + i)))
    (root / "thin.png").write_bytes(strip(1, 65_000))
    found = {}
    for name, engine in (("local", None), ("ray", RayPayloads(TextReader, RayOptions(progress=False)))):
        store = EdgeStore(tmp_path / name, "images")
        run(store, encoder, root)
        summary = Summary()
        OcrStage(store, root, TextReader().ocr_by, TextReader, summary, ocr_options(batch_size=2, progress=False),
                 engine).run()
        assert summary.ocr is not None
        figures = {k: v for k, v in summary.ocr.items() if k != "photos_per_s"}
        found[name] = ({p["path"]: p.get("ocr_lines") for _, p in store.payloads()}, figures, summary.failures)
        store.close()
    assert found["ray"] == found["local"]
    lines, figures, _ = found["ray"]
    assert figures["read"] == 4 and figures["with_text"] == 3 and lines["thin.png"] == []
