"""Archives for tests (indexer/archive.py): a described collection to export, its whole contents, its answers;
archives crafted with the trailer the exporter would give them (whole, whatever they say), a gzip bomb among them."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from helpers.stores import DIM, MODEL, make_points
from indexer import archive
from indexer.archive import export_archive
from store.interface import IndexTuning, SearchFilter, VectorStore


def fill(store: VectorStore, n: int = 40, seed: int = 0, model: str = MODEL) -> list[str]:
    """`n` points, three in four described, in a collection of `model`; their ids."""
    store.ensure_collection(model, DIM)
    points = make_points(n, seed=seed)
    for p in points:
        p.payload["model_id"] = model
    store.upsert(points)
    # Descriptions of distinct lengths: distinct BM25 scores, so rankings have no ties to break.
    store.set_descriptions({p.id: {"description": ("red car" if i % 3 else "small dog") + " more" * (4 * i),
                                   "tags": ["outdoor", f"t{i}"], "visible_text": "收据" if i % 5 == 0 else None,
                                   "described_by": "tiny-vlm|p1"}
                            for i, p in enumerate(points) if i % 4})
    return [p.id for p in points]


def everything(store: VectorStore) -> dict[str, tuple[list[float], dict[int, float] | None, dict]]:  # type: ignore[type-arg]
    out = {}
    offset = None
    while True:
        page, offset = store.records_page(offset, 7)
        for r in page:
            assert r.vector is not None
            # qdrant-client's local mode keeps text weights as float64, the engines as float32
            text = None if r.text is None else {k: float(np.float32(v)) for k, v in r.text.items()}
            out[r.id] = (r.vector.tolist(), text, r.payload)
        if offset is None or not page:
            return out


def answers(store: VectorStore) -> list[list[tuple[float, list[str]]]]:
    """Vector, hybrid and text answers: (score, ids with that score) best first. Equal scores (RRF gives
    them: ranks 1+2 and 2+1) may come in either order, and the last group may be cut by the limit."""
    query = make_points(3, seed=9)
    runs = []
    for p in query:
        runs.append(store.search(p.vector, 10))
        runs.append(store.search(p.vector, 10, text="red car", where=SearchFilter(folder="album")))
    runs += [store.search(None, 10, text=t) for t in ("small dog", "收据", "outdoor t7")]
    out = []
    for hits in runs:
        groups: dict[float, list[str]] = {}
        for h in hits:
            groups.setdefault(round(h.score, 5), []).append(h.id)
        out.append([(score, sorted(ids)) for score, ids in groups.items()][:-1])
    return out


def export(store: VectorStore, path: Path) -> archive.ArchiveSummary:
    return export_archive(store, str(path), IndexTuning(), "images")


def everything_from(file: Path) -> dict[str, tuple[list[float], dict[int, float] | None, dict]]:  # type: ignore[type-arg]
    with archive.open_archive(file) as fh:
        _, records = archive.read_archive(fh, str(file))
        return {r.id: (r.vector.tolist(), r.text, r.payload) for r in records}  # type: ignore[union-attr]


def same_points(a: VectorStore, b: VectorStore) -> bool:
    """The same points, payloads and text vectors; dense vectors equal to float32 rounding (a Cosine
    collection normalises each vector it is given again, which may move its last bit)."""
    left, right = everything(a), everything(b)
    if left.keys() != right.keys():
        return False
    return all(left[k][1:] == right[k][1:] and np.allclose(left[k][0], right[k][0], rtol=0, atol=1e-6)
               for k in left)


def lines_of(file: Path) -> list[bytes]:
    """The header and point lines of a plain archive (its trailer left out)."""
    return file.read_bytes().splitlines(keepends=True)[:-1]


def as_line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def trailer(body: bytes, count: int) -> bytes:
    """The trailer the exporter writes after `body` (the header and `count` point lines)."""
    return as_line({"end": True, "count": count, "sha256": hashlib.sha256(body).hexdigest()})


def crafted(file: Path, lines: list[bytes]) -> Path:
    """`lines` (a header, then points) written as a whole archive: with the trailer that makes it pass its
    count and checksum, as an edited archive given a new checksum would."""
    body = b"".join(lines)
    file.write_bytes(body + trailer(body, len(lines) - 1))
    return file


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS
CHUNK = b"A" * (1 << 20)


def gzip_bomb(file: Path, header: bytes, expanded: int) -> int:
    """A gzip archive whose one point line holds `expanded` bytes of base64 "vector", with a valid trailer
    (and gzip CRC); about 1 KB of gzip per MiB of line. Made chunk by chunk: a deflate stream reset by a
    full flush compresses the same chunk to the same bytes, so one compressed chunk is written again and
    again, and only the checksums read every byte. Returns the size of the file."""
    start, end = b'{"id":"x","text":null,"payload":{},"vector":"', b'"}\n'
    digest, crc, size = hashlib.sha256(header + start), zlib.crc32(header + start), len(header + start)
    stream = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the gzip wrapping is written here
    repeat = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = repeat.compress(CHUNK) + repeat.flush(zlib.Z_FULL_FLUSH)
    with open(file, "wb") as out:
        out.write(GZIP_HEADER + stream.compress(header + start) + stream.flush(zlib.Z_FULL_FLUSH))
        for _ in range(expanded // len(CHUNK)):
            out.write(packed)
            digest.update(CHUNK)
            crc = zlib.crc32(CHUNK, crc)
        digest.update(end)
        tail = end + as_line({"end": True, "count": 1, "sha256": digest.hexdigest()})
        crc = zlib.crc32(tail, crc)
        size += expanded // len(CHUNK) * len(CHUNK) + len(tail)
        out.write(stream.compress(tail) + stream.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF))
        return out.tell()
