"""Backup and restore (issue 22): `python -m indexer --export / --import` throughput (points/s), archive size
per 100k described points, and peak memory at two collection sizes, per backend.

Each step runs in its own process (peak RSS is the process's ru_maxrss): `make` fills a store with N
points (512-d unit vectors, a payload as the indexer writes it, and a description of realistic length
with its text vector), `export` writes it to an archive (gzip and plain), `import` checks and writes
the archive into an empty store. Backends: the embedded store (qdrant-edge) and qdrant-client's local
mode on disk (the stand-in for a Qdrant server here: it keeps every point in Python memory, so its
memory grows with the collection whatever the archive code does, and a real server's speed differs).

    .venv/bin/python bench/backup.py                 # 5k and 20k points; writes BENCHMARKS.md
    .venv/bin/python bench/backup.py --sizes 2000 --no-record
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _report import record, table  # noqa: E402

DIM = 512
MODEL = "OFA-Sys/chinese-clip-vit-base-patch16"
DESCRIPTION = "一只棕色的小狗在公园的草地上奔跑，背景里有几棵树和一张长椅，阳光很好。"
VISIBLE = "公园入口 开放时间 8:00-18:00"
TAGS = ["狗", "公园", "草地", "户外", "阳光"]


def open_store(backend: str, folder: Path) -> Any:
    if backend == "edge":
        from store.qdrant_edge import EdgeStore

        return EdgeStore(folder, "images")
    from qdrant_client import QdrantClient

    from store.qdrant_server import ServerStore

    return ServerStore(QdrantClient(path=str(folder)), "images")


def make(backend: str, folder: Path, n: int) -> None:
    import numpy as np

    from store.interface import Record, folders_of, point_id
    from store.text_terms import terms

    store = open_store(backend, folder)
    store.ensure_collection(MODEL, DIM)
    rng = np.random.default_rng(0)
    text = terms("\n".join([DESCRIPTION, VISIBLE, *TAGS]))
    for start in range(0, n, 1000):
        vectors = rng.standard_normal((min(1000, n - start), DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        page = []
        for i, vector in enumerate(vectors, start):
            rel = f"2024/{i // 500:03d}/IMG_{i:07d}.jpg"
            page.append(Record(point_id(rel), vector, text, {
                "path": rel, "content_hash": f"sha256:{i:064x}", "size": 3_000_000 + i, "mtime": 1.7e9 + i,
                "width": 4032, "height": 3024, "indexed_at": "2025-01-02T03:04:05+00:00", "model_id": MODEL,
                "folders": folders_of(rel), "description": DESCRIPTION, "visible_text": VISIBLE, "tags": TAGS,
                "described_by": "Qwen/Qwen2.5-VL-3B-Instruct#6c1f0e2a"}))
        store.restore(page)
    store.close()  # flushed; no index build (export reads by scroll)


def export(backend: str, folder: Path, target: Path) -> dict[str, Any]:
    from indexer.archive import export_archive
    from store.interface import IndexTuning

    store = open_store(backend, folder)
    summary = export_archive(store, str(target), IndexTuning(), "images")
    store.close()
    return {"points": summary.points, "seconds": summary.seconds, "bytes": target.stat().st_size}


def import_(backend: str, folder: Path, source: Path) -> dict[str, Any]:
    from indexer.archive import import_archive

    store = open_store(backend, folder)
    finish, built = store.finish, {"seconds": 0.0}

    def timed_finish() -> None:  # the HNSW build at the end, reported apart from the archive's own work
        started = time.perf_counter()
        finish()
        built["seconds"] = time.perf_counter() - started

    store.finish = timed_finish
    summary = import_archive(store, str(source), MODEL)
    count = store.count()
    store.close()
    return {"points": summary.points, "seconds": summary.seconds - built["seconds"], "index_s": built["seconds"],
            "count": count}


def step(args: list[str]) -> dict[str, Any]:
    """One step in a fresh process: its result and its peak RSS."""
    out = subprocess.run([sys.executable, __file__, "--step", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_step(argv: list[str]) -> None:
    kind, backend, folder, extra = argv[0], argv[1], Path(argv[2]), argv[3]
    heap = len(argv) > 4 and argv[4] == "heap"
    if heap:  # the Python heap's peak (the archive code's own memory; the engine's is not Python's)
        import tracemalloc

        tracemalloc.start()
    if kind == "make":
        make(backend, folder, int(extra))
        result: dict[str, Any] = {}
    elif kind == "export":
        result = export(backend, folder, Path(extra))
    else:
        result = import_(backend, folder, Path(extra))
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if heap:
        result["heap_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps(result))


def measure_heap(n: int, work: Path) -> dict[str, Any]:
    """Peak Python heap of an export and an import of n points (embedded store), under tracemalloc."""
    source, target, file = work / f"heap-{n}-src", work / f"heap-{n}-dst", work / f"heap-{n}.jsonl.gz"
    step(["make", "edge", str(source), str(n)])
    exported = step(["export", "edge", str(source), str(file), "heap"])
    imported = step(["import", "edge", str(target), str(file), "heap"])
    result = {"heap": n, "export_mb": exported["heap_mb"], "import_mb": imported["heap_mb"]}
    print(json.dumps(result), file=sys.stderr)
    return result


def measure(backend: str, n: int, work: Path) -> dict[str, Any]:
    source, target = work / f"{backend}-{n}-src", work / f"{backend}-{n}-dst"
    started = time.perf_counter()
    step(["make", backend, str(source), str(n)])
    print(f"{backend} {n}: made in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    plain = step(["export", backend, str(source), str(work / f"{backend}-{n}.jsonl")])
    zipped = step(["export", backend, str(source), str(work / f"{backend}-{n}.jsonl.gz")])
    loaded = step(["import", backend, str(target), str(work / f"{backend}-{n}.jsonl.gz")])
    assert loaded["count"] == n, loaded
    result = {"backend": backend, "n": n, "export": plain, "export_gz": zipped, "import": loaded}
    print(json.dumps(result), file=sys.stderr)
    return result


def report(results: list[dict[str, Any]]) -> str:
    rows = []
    for h in [r for r in results if "heap" in r]:
        rows.append((f"Python heap peak, {h['heap']:,} points (embedded)",
                     f"export {h['export_mb']:.1f} MB, import {h['import_mb']:.1f} MB (tracemalloc)"))
    for r in [r for r in results if "backend" in r]:
        n = r["n"]
        rows.append((f"{r['backend']}, {n:,} points",
                     f"export {n / r['export']['seconds']:,.0f} pts/s (gzip {n / r['export_gz']['seconds']:,.0f}); "
                     f"import (check + write, gzip) {n / r['import']['seconds']:,.0f} pts/s, then the index build "
                     f"{r['import']['index_s']:,.0f} s; per 100k points "
                     f"{r['export']['bytes'] / n * 1e5 / 2**20:,.0f} MiB (gzip "
                     f"{r['export_gz']['bytes'] / n * 1e5 / 2**20:,.0f} MiB); peak RSS export "
                     f"{r['export']['rss_mb']:,.0f} MB, import {r['import']['rss_mb']:,.0f} MB"))
    return table(rows, ("backend, size", "figures"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--backends", nargs="*", default=["edge", "local"])
    parser.add_argument("--heap-sizes", type=int, nargs="*", default=[2_000, 8_000])
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--compose", nargs="+", type=Path,
                        help="write the block from the JSON lines earlier runs printed on stderr (no measuring)")
    args = parser.parse_args()
    results = []
    if args.compose:
        for log in args.compose:
            results += [json.loads(line) for line in log.read_text().splitlines()
                        if line.startswith(('{"backend"', '{"heap"'))]
    else:
        with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
            for n in args.heap_sizes:
                results.append(measure_heap(n, Path(tmp)))
            for backend in args.backends:
                for n in args.sizes:
                    results.append(measure(backend, n, Path(tmp)))
    body = f"""### Backup and restore: `indexer --export / --import` (issue 22)

`.venv/bin/python bench/backup.py` on the shared 2-core machine (AVX-512; the archive code is plain
Python + numpy, no instruction-set-specific path). Points: 512-d vectors, the indexer's payload and a
described photo's fields (a 40-character Chinese description, visible text, 5 tags) with its text
vector. Import = read the whole archive to check it, then write it (so it reads twice); the HNSW build
that ends it (as it ends an indexer run) is given apart. Each step runs in
its own process; peak RSS is that process's. "local" is qdrant-client's local mode on disk (the stand-in
for a server here, which holds every point in Python memory: its RSS grows with the collection whatever
the archive does). The archive code's own memory is bounded by its 256-point pages: its Python heap peak
(tracemalloc) stays the same from the smaller to the larger size; what RSS adds with size is the engine's
(mmap'd segment files it reads or writes, and the HNSW graph built at the end of an import).

{report(results)}
"""
    print(body)
    if not args.no_record:
        record("backup", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--step":
        run_step(sys.argv[2:])
    else:
        main()
