"""`python -m indexer --export FILE` / `--import FILE`: the collection as a portable, streaming archive.

The archive is JSON lines (gzip-compressed when the name ends in .gz; `-` is stdout / stdin, and a
gzip stream on stdin is recognised by its magic bytes):

    {"format": "images-archive", "version": 1, "model_id": ..., "dim": ..., "described_by": {...},
     "index": {...}, "collection": ..., "exported_at": ...}                      the header
    {"id": ..., "vector": <base64 of float32 little-endian>, "payload": {...},
     "text": {"terms": <base64 of uint32 LE>, "weights": <base64 of float32 LE>} | null}   one line per point
    {"end": true, "count": N, "sha256": <hex of every line above, newlines included>}   the trailer

Both directions stream in pages of PAGE points (memory does not grow with the collection). Import
reads the archive twice: the first pass checks it whole (format, version, every point by the rules
`--verify` applies, indexer.verify.PointCheck, no id twice, count and checksum) and writes nothing, so
a truncated, altered or hostile archive is refused before the store is touched; the second pass writes
it page by page (a pipe is copied to a temporary file as the first pass reads it). No line is read
beyond the longest a valid point can be written as (line_limit: from the header's vector size and the
payload limits), so memory stays bounded by a constant whatever a line holds (a gzip bomb included). A
write replaces points by id with the archived ones, so importing twice changes nothing and an
interrupted import is finished by running it again. Points already in the store but not in the archive
are kept.

With another CLIP model than the archive's, `--drop-vectors` keeps only the descriptions: the points
must have been indexed with the current model first (`python -m indexer`), and each one whose file
content (content_hash) is the archived one gets its description back, with no VLM call.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.files import atomic_file
from indexer.verify import MAX_DIM, MAX_PAYLOAD_BYTES, MAX_TERMS, PointCheck, vector_problem
from store.interface import (
    DESCRIPTION_FIELDS,
    OCR_FIELDS,
    CollectionMissingError,
    IndexTuning,
    ModelMismatchError,
    Record,
    StoreError,
    VectorStore,
    description_of,
    ocr_of,
)

FORMAT = "images-archive"
VERSION = 1
PAGE = 256  # points per store read / write
GZIP_MAGIC = b"\x1f\x8b"
HEADER_LIMIT = 1 << 20  # bytes of the header line (model record, describer counts, index settings)
LINE_SLACK = 1 << 10  # bytes of a point's line besides its values: keys, quotes, its 36-character id


class ArchiveError(StoreError):
    """The archive cannot be read or is not whole (truncated, altered, another format)."""


@dataclass
class ArchiveSummary:
    points: int = 0  # records read or written
    described: int = 0  # of them, with a description
    skipped: int = 0  # --drop-vectors: archived points with no current point of the same content
    seconds: float = 0.0
    bytes: int = 0  # archive size (export) or bytes read (import)
    model_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- export --------------------------------------------------------------------------------------


def export_archive(store: VectorStore, target: str, tuning: IndexTuning, collection: str) -> ArchiveSummary:
    """Write the whole collection to `target` (a file name, or "-" for stdout). A file is written
    under a temporary name and renamed when complete, so a failed export never leaves a short archive
    with the final name."""
    info = store.info()
    if info is None:
        raise CollectionMissingError(f"there is no collection {collection!r} to export: run the indexer first")
    started = time.perf_counter()
    header = {"format": FORMAT, "version": VERSION, "model_id": info.model_id, "dim": info.dim,
              "distance": "Cosine", "collection": collection, "described_by": store.described_counts(),
              "index": dataclasses.asdict(tuning), "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    summary = ArchiveSummary(model_id=info.model_id)
    with _output(target) as out:
        digest = hashlib.sha256()

        def put(line: bytes) -> None:
            digest.update(line)
            out.write(line)
            summary.bytes += len(line)

        put(_line(header))
        offset: Any = None
        while True:
            page, offset = store.records_page(offset, PAGE)
            for record in page:
                put(_line(record_to_json(record)))
                summary.points += 1
                summary.described += record.payload.get("described_by") is not None
            if offset is None or not page:
                break
        trailer = _line({"end": True, "count": summary.points, "sha256": digest.hexdigest()})
        out.write(trailer)
        summary.bytes += len(trailer)
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _output(target: str) -> Iterator[IO[bytes]]:
    if target == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path = Path(target)
    with atomic_file(path, prefix=f".{path.name}.", suffix=".partial") as raw:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as zipped:
                yield zipped  # type: ignore[misc]
        else:
            yield raw


def record_to_json(record: Record) -> dict[str, Any]:
    vector = None if record.vector is None else base64.b64encode(
        np.ascontiguousarray(record.vector, dtype="<f4").tobytes()).decode("ascii")
    text = None if record.text is None else {
        "terms": _b64(np.fromiter(record.text.keys(), dtype="<u4", count=len(record.text))),
        "weights": _b64(np.fromiter(record.text.values(), dtype="<f4", count=len(record.text)))}
    return {"id": record.id, "vector": vector, "text": text, "payload": record.payload}


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unb64(value: Any, dtype: str) -> np.ndarray:
    raw = base64.b64decode(str(value), validate=True)
    if len(raw) % 4:
        raise ValueError("a base64 array whose length is not a whole number of values")
    return np.frombuffer(raw, dtype=dtype)


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


# --- reading -------------------------------------------------------------------------------------


@dataclass
class Header:
    model_id: str
    dim: int
    data: dict[str, Any]


class SpoolError(OSError):
    """The temporary file that keeps stdin for the second pass cannot be written (TMPDIR full)."""


def line_limit(dim: int) -> int:
    """The longest line (newline included) a valid point of `dim` values can be written as: its vector,
    text vector and payload at the largest indexer.verify allows, with room for the keys."""
    return LINE_SLACK + _b64_chars(4 * dim) + 2 * _b64_chars(4 * MAX_TERMS) + MAX_PAYLOAD_BYTES


def _b64_chars(size: int) -> int:
    return 4 * -(-size // 3)


def open_archive(path: Path) -> IO[bytes]:
    """The archive's bytes, gunzipped when it starts with gzip's magic."""
    try:
        with open(path, "rb") as raw:
            zipped = raw.read(2) == GZIP_MAGIC
        # the caller closes it
        return gzip.open(path, "rb") if zipped else open(path, "rb")  # type: ignore[return-value]  # noqa: SIM115
    except OSError as exc:
        raise ArchiveError(f"cannot read the archive {path}: {exc.strerror or exc}") from exc


@contextmanager
def _read_stdin(spool: IO[bytes]) -> Iterator[IO[bytes]]:
    """stdin, gunzipped when it starts with gzip's magic, copied to `spool` as it is read: the first
    pass refuses a bad line as soon as it comes, with no more than that line spooled."""
    with io.BufferedReader(_Tee(sys.stdin.buffer, spool), 1 << 20) as raw:
        if raw.peek(2)[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as zipped:
                yield zipped  # type: ignore[misc]
        else:
            yield raw


class _Tee(io.RawIOBase):
    """A stream read once, each piece written to `spool` as it is read."""

    def __init__(self, source: IO[bytes], spool: IO[bytes]) -> None:
        super().__init__()
        self.source = source
        self.spool = spool

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        try:
            self.spool.write(data)
        except OSError as exc:
            raise SpoolError(exc.errno, exc.strerror) from exc
        buffer[: len(data)] = data
        return len(data)


def read_archive(fh: IO[bytes], name: str, vectors: bool = True) -> tuple[Header, Iterator[Record]]:
    """The header and an iterator of the records. The iterator checks each record by the rules of
    --verify (indexer.verify.PointCheck; `vectors` False: all but its dense vector) and, at the end,
    the trailer (count and checksum); any fault raises ArchiveError naming `name` and the line."""
    digest = hashlib.sha256()
    first = _readline(fh, name, 1, HEADER_LIMIT, "an archive's header")
    if not first:
        raise ArchiveError(f"{name} is empty: not an archive made by `python -m indexer --export`")
    digest.update(first)
    header = _header(_parse(first, name, 1), name)

    def records() -> Iterator[Record]:
        check = PointCheck(header.model_id, header.dim, vectors)
        limit, what = line_limit(header.dim), f"a point of {header.dim} values"
        count = 0
        line_no = 1
        while True:
            line_no += 1
            line = _readline(fh, name, line_no, limit, what)
            if not line:
                raise ArchiveError(f"{name} is truncated after {count} points (no trailer at line {line_no}): "
                                   "the export did not finish, or the copy was cut short. Nothing was written.")
            item = _parse(line, name, line_no)
            if item.get("end") is True:
                _check_trailer(item, count, digest.hexdigest(), name)
                if _readline(fh, name, line_no + 1, limit, what):
                    raise ArchiveError(f"{name} has data after its trailer (line {line_no + 1}): it was altered")
                return
            digest.update(line)
            yield _sound(record_from_json(item, name, line_no), check, name, line_no)
            count += 1

    return header, records()


def _header(data: dict[str, Any], name: str) -> Header:
    if data.get("format") != FORMAT:
        raise ArchiveError(f"{name} is not an archive made by `python -m indexer --export` (no {FORMAT!r} header)")
    if data.get("version") != VERSION:
        raise ArchiveError(f"{name} is a version {data.get('version')!r} archive; this indexer reads version "
                           f"{VERSION}: use the indexer version that wrote it, or a newer one")
    try:
        header = Header(str(data["model_id"]), int(data["dim"]), data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"{name}: the header lacks the model record ({exc})") from exc
    if not 0 < header.dim <= MAX_DIM:
        raise ArchiveError(f"{name}: the header gives an invalid vector size {header.dim} (1 to {MAX_DIM})")
    return header


def _readline(fh: IO[bytes], name: str, line_no: int, limit: int, what: str) -> bytes:
    """The next line, read no further than `limit` bytes: a longer one (a gzip bomb) is never held."""
    try:
        line = fh.readline(limit + 1)
    except SpoolError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile) as exc:  # a cut gzip stream: EOFError
        raise ArchiveError(f"{name} cannot be read to its end ({exc}): it is truncated or damaged") from exc
    if len(line) > limit:
        raise ArchiveError(f"{name}, line {line_no}, is longer than {what} can be ({limit} bytes): the archive "
                           "was altered or is not one. Nothing was written.")
    if line and not line.endswith(b"\n"):
        raise ArchiveError(f"{name} is truncated: its last line is cut short. Nothing was written.")
    return line


def _parse(line: bytes, name: str, line_no: int) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested thousands deep
        raise ArchiveError(f"{name}, line {line_no}, is not valid JSON ({exc}): the archive is damaged") from exc
    if not isinstance(data, dict):
        raise ArchiveError(f"{name}, line {line_no}, is not a JSON object: the archive is damaged")
    return data


def _check_trailer(item: dict[str, Any], count: int, digest: str, name: str) -> None:
    if item.get("count") != count:
        raise ArchiveError(f"{name} holds {count} points but its trailer says {item.get('count')!r}: "
                           "points were removed or added. Nothing was written.")
    if item.get("sha256") != digest:
        raise ArchiveError(f"{name} fails its checksum (sha256 of the records differs from the trailer's): "
                           "it was altered or damaged. Nothing was written.")


def record_from_json(item: dict[str, Any], name: str, line_no: int) -> Record:
    """The record a point's line holds, decoded (its values are checked by PointCheck)."""
    try:
        pid, payload = item["id"], item["payload"]
        if not isinstance(pid, str) or not isinstance(payload, dict):
            raise TypeError("an id that is not text, or a payload that is not an object")
        vector = None if item.get("vector") is None else _unb64(item["vector"], "<f4").astype(np.float32)
        text = _text_from_json(item.get("text"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"{name}, line {line_no}: a malformed point ({exc}): the archive is damaged. "
                           "Nothing was written.") from exc
    return Record(pid, vector, text, payload)


def _text_from_json(value: Any) -> dict[int, float] | None:
    if value is None:
        return None
    terms, weights = _unb64(value["terms"], "<u4"), _unb64(value["weights"], "<f4")
    if len(terms) != len(weights) or len(np.unique(terms)) != len(terms):
        raise ValueError("a text vector whose terms and weights do not pair up")
    return dict(zip(terms.tolist(), weights.tolist(), strict=True))


def _sound(record: Record, check: PointCheck, name: str, line_no: int) -> Record:
    """`record`, or ArchiveError naming the first rule it breaks."""
    problems = check.problems(record)
    if problems:
        problem, point = problems[0]
        # a store with damaged vectors exports them as they are: its descriptions can still come back
        hint = " (--drop-vectors imports its descriptions alone)" if problem == vector_problem(
            record.vector, check.dim) else ""
        raise ArchiveError(f"{name}, line {line_no}, point {point}: {problem}{hint}. The archive was altered or "
                           "made by another tool. Nothing was written.")
    return record


# --- import --------------------------------------------------------------------------------------


def import_archive(store: VectorStore, source: str, model_id: str, drop_vectors: bool = False) -> ArchiveSummary:
    """Import `source` (a file, or "-" for stdin) into `store` (see the module docstring). `model_id`
    is the current CLIP model's. Raise ArchiveError before writing anything when the archive is not
    whole or holds a point --verify would refuse, ModelMismatchError when its vectors are another
    model's (and not `drop_vectors`)."""
    started = time.perf_counter()
    name = "the archive on stdin" if source == "-" else str(source)
    with _checked(source, name, not drop_vectors) as (path, header, count):
        summary = ArchiveSummary(model_id=header.model_id, bytes=path.stat().st_size)
        if drop_vectors:
            _import_descriptions(store, path, name, model_id, summary)
        else:
            _import_points(store, path, name, header, model_id, summary)
    if summary.points != count:  # the file changed between the passes
        raise ArchiveError(f"{name} changed while it was imported: run the import again")
    summary.seconds = time.perf_counter() - started
    return summary


def check_archive(fh: IO[bytes], name: str, vectors: bool = True) -> tuple[Header, int]:
    """Read the whole archive, checking everything (the first pass); (header, number of points)."""
    header, records = read_archive(fh, name, vectors)
    return header, sum(1 for _ in records)


@contextmanager
def _checked(source: str, name: str, vectors: bool) -> Iterator[tuple[Path, Header, int]]:
    """The archive checked whole (the first pass) and a path to read it again from: the file itself,
    or stdin as the first pass read it, copied into a temporary file (TMPDIR)."""
    if source != "-":
        with open_archive(Path(source)) as fh:
            header, count = check_archive(fh, name, vectors)
        yield Path(source), header, count
        return
    fd, tmp = tempfile.mkstemp(prefix="images-archive.", suffix=".spool")
    try:
        with os.fdopen(fd, "wb") as spool:
            with _read_stdin(spool) as fh:
                header, count = check_archive(fh, name, vectors)
        yield Path(tmp), header, count
    finally:
        Path(tmp).unlink(missing_ok=True)


def _import_points(store: VectorStore, path: Path, name: str, header: Header, model_id: str,
                   summary: ArchiveSummary) -> None:
    if header.model_id != model_id:
        raise ModelMismatchError(
            f"{name} holds vectors made by {header.model_id!r}, but CLIP_MODEL is {model_id!r}. Set CLIP_MODEL "
            f"to {header.model_id!r} to import it whole, or import its descriptions only: run `python -m "
            "indexer` (embeds the library with the current model), then `python -m indexer --import "
            f"{name if name != 'the archive on stdin' else '-'} --drop-vectors`.")
    store.ensure_collection(header.model_id, header.dim)  # refuses a collection of another model
    with open_archive(path) as fh:
        _, records = read_archive(fh, name)
        page: list[Record] = []
        for record in records:  # each has its vector: the first pass checked it
            page.append(record)
            if len(page) >= PAGE:
                _write(store, page, summary)
        _write(store, page, summary)
    store.finish()


def _write(store: VectorStore, page: list[Record], summary: ArchiveSummary) -> None:
    store.restore(page)
    summary.points += len(page)
    summary.described += sum(r.payload.get("described_by") is not None for r in page)
    page.clear()


def _import_descriptions(store: VectorStore, path: Path, name: str, model_id: str, summary: ArchiveSummary) -> None:
    """--drop-vectors: the archived descriptions onto the current points of the same content."""
    info = store.info()
    if info is None or info.model_id != model_id:
        raise CollectionMissingError(
            f"--drop-vectors puts descriptions back onto points made by the current CLIP_MODEL ({model_id!r}); "
            "the collection does not hold them yet: run `python -m indexer` first, then this import again.")
    # id -> a short digest of the point's content_hash: ~100 bytes a point, a paged scan.
    current = {pid: _short(payload.get("content_hash")) for pid, payload in store.payloads()}
    with open_archive(path) as fh:
        _, records = read_archive(fh, name, vectors=False)
        batch: dict[str, dict[str, Any]] = {}
        for record in records:
            summary.points += 1
            fields = description_of(record.payload)
            if record.payload.get("ocr_by") is not None:  # the text read in the photo (indexer --ocr) comes too
                fields.update(ocr_of(record.payload))
            if all(fields.get(k) is None for k in (*DESCRIPTION_FIELDS, *OCR_FIELDS)):
                continue
            if current.get(record.id) != _short(record.payload.get("content_hash")):
                summary.skipped += 1  # not indexed (yet), or its file changed since the export
                continue
            batch[record.id] = fields
            if len(batch) >= PAGE:
                store.set_descriptions(batch)
                summary.described += len(batch)
                batch = {}
        store.set_descriptions(batch)
        summary.described += len(batch)
    store.finish()


def _short(value: Any) -> bytes | None:
    return None if value is None else hashlib.blake2b(str(value).encode(), digest_size=8).digest()
