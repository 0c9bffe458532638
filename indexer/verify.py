"""`python -m indexer --verify`: read the whole collection and check it, page by page.

Every point is checked by PointCheck, the rules `--import` also applies to every archived point before
it writes anything (indexer/archive.py): a finite CLIP vector of the recorded size and unit norm; a path
the library rule takes (core.library.name_problem: relative, no `..`, nothing hidden, an image name);
the id the indexer makes from that path (store.interface.point_id), met once; the collection's model in the
payload; a flat payload (store.interface.clean_payload) of at most MAX_PAYLOAD_BYTES as JSON; description
fields of their types and sizes; a text vector of finite weights, no more terms than a description can
make, present on a described point. --verify also checks that the number of points read equals the
store's count. What is found is a list of problems, each with up to EXAMPLES paths, and the way back
(RECOVERY).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.library import name_problem
from indexer.moments import is_moment, moment_id
from store.interface import (
    RECOVERY,
    Record,
    StoreError,
    VectorStore,
    clean_payload,
    description_text,
    point_id,
)

PAGE = 512
NORM_SLACK = 1e-3  # |norm - 1| allowed (float32 rounding is ~1e-7)
EXAMPLES = 5
# The sizes a valid point stays within. Fixed (no setting), far above what the indexer and the describer
# write, so that they also bound the longest line an archive may hold (indexer/archive.py, line_limit).
MAX_DIM = 65_536  # CLIP vector size (CLIP models give 512 to 1280)
MAX_TEXT_CHARS = 65_536  # a description's words: description, visible_text and tags together
MAX_NAME_CHARS = 1_024  # described_by: a model id, "#", a prompt hash
MAX_READ_CHARS = 65_536  # the read text of a photo (indexer --ocr keeps OCR_MAX_LINES lines)
# text vector terms: a character starts at most two tokens (CJK: it, its pair)
MAX_TERMS = 2 * (MAX_TEXT_CHARS + MAX_READ_CHARS)
MAX_PAYLOAD_BYTES = 2 << 20  # the payload as JSON (path, folders, description...): ~1 KB typically
# The store still opens, so its descriptions can be kept before re-embedding.
REPAIR = ("To keep the descriptions and re-embed: `python -m indexer --export keep.jsonl.gz`, "
          "`python -m indexer --recreate`, then `python -m indexer --import keep.jsonl.gz --drop-vectors`.")


@dataclass
class Report:
    points: int = 0
    counted: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)  # what is wrong -> examples
    totals: dict[str, int] = field(default_factory=dict)  # what is wrong -> number of points

    def add(self, problem: str, example: str) -> None:
        self.totals[problem] = self.totals.get(problem, 0) + 1
        examples = self.problems.setdefault(problem, [])
        if len(examples) < EXAMPLES:
            examples.append(example)

    @property
    def ok(self) -> bool:
        return not self.totals

    def lines(self) -> list[str]:
        if self.ok:
            return [f"ok: {self.points} points checked, none damaged"]
        out = [f"damaged: {sum(self.totals.values())} problems in {self.points} points read "
               f"({self.counted} counted by the store)"]
        for problem, total in self.totals.items():
            out.append(f"  {problem}: {total} (e.g. {', '.join(self.problems[problem])})")
        out += [RECOVERY, REPAIR]
        return out


def verify_store(store: VectorStore, progress: Callable[[int], None] | None = None) -> Report:
    report = Report()
    info = store.info()
    if info is None:
        report.add("the collection or its model record is missing", "(no collection)")
        return report
    check = PointCheck(info.model_id, info.dim)
    offset: Any = None
    while True:
        try:
            page, offset = store.records_page(offset, PAGE)
        except StoreError as exc:
            report.add("the store cannot be read to its end", str(exc)[:200])
            break
        for record in page:
            report.points += 1
            for problem, example in check.problems(record):
                report.add(problem, example)
        if progress is not None:
            progress(report.points)
        if offset is None or not page:
            break
    report.counted = store.count()
    if report.counted != report.points:
        report.add("the store's count differs from the points it holds",
                   f"{report.counted} counted, {report.points} read")
    return report


@dataclass
class PointCheck:
    """The rules every point meets, for --verify (a store's points) and --import (an archive's, before
    anything is written). `vectors` False: the dense vector is not checked (--import --drop-vectors
    drops it, so an archive of a store whose vectors are damaged still gives its descriptions back)."""

    model_id: str
    dim: int
    vectors: bool = True
    seen: set[bytes] = field(default_factory=set)  # the ids met so far, 16 bytes each

    def problems(self, record: Record) -> list[tuple[str, str]]:
        """(what is wrong, the point's name) for each rule `record` breaks; [] for a sound point."""
        payload = record.payload
        path = payload.get("path")
        name = shown(path) if isinstance(path, str) else f"id {shown(str(record.id))}"
        found = [vector_problem(record.vector, self.dim) if self.vectors else None,
                 self.id_problem(record.id, path, payload),
                 None if payload.get("model_id") == self.model_id else
                 "a payload made by another model than the collection's",
                 payload_problem(payload) or text_problem(record.text, payload)]
        return [(problem, name) for problem in found if problem]

    def id_problem(self, pid: str, path: Any, payload: dict[str, Any] | None = None) -> str | None:
        if not isinstance(path, str):
            return "no path in the payload"
        refused = name_problem(path)
        if refused:
            return f"a path the library rule refuses ({refused})"
        if own_id(path, payload or {}) != pid:
            return "an id that is not the one its path gives"
        key = uuid.UUID(pid).bytes
        if key in self.seen:
            return "a second point with the same id (its path twice)"
        self.seen.add(key)
        return None


def own_id(path: str, payload: dict[str, Any]) -> str:
    """The id the indexer gives a point: its path's, or for a video's moment its path's and index's."""
    if not is_moment(payload):
        return point_id(path)
    moment = payload.get("moment")
    return moment_id(path, moment) if isinstance(moment, int) and not isinstance(moment, bool) else ""


def vector_problem(vector: np.ndarray | None, dim: int) -> str | None:
    if vector is None or vector.shape != (dim,):
        return f"no CLIP vector of {dim} values"
    if not np.isfinite(vector).all():
        return "a CLIP vector with values that are not finite"
    if abs(float(np.linalg.norm(vector.astype(np.float64))) - 1.0) > NORM_SLACK:
        return "a CLIP vector that is not of unit length"
    return None


def payload_problem(payload: dict[str, Any]) -> str | None:
    """What makes the payload one the store would not take or the indexer not write, or None."""
    described = description_problem(payload) or ocr_problem(payload)  # first: they name the field
    if described:
        return described
    try:
        clean_payload(payload)  # the store's own rule: flat values, lists of texts in LIST_FIELDS
        size = len(json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
    except StoreError:
        return "a payload field that is not text, a number or a list of texts"
    except ValueError:
        return "a payload number that is not finite"
    return f"a payload of over {MAX_PAYLOAD_BYTES} bytes" if size > MAX_PAYLOAD_BYTES else None


def ocr_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with a point's read text (indexer --ocr), or None."""
    for key in ("ocr_text", "ocr_norm", "ocr_by"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return f"a read-text field {key!r} that is not text"
    lines = payload.get("ocr_lines")
    if lines is not None and not (isinstance(lines, list) and all(isinstance(line, dict) for line in lines)):
        return "read lines that are not a list of objects"
    return None


def description_problem(payload: dict[str, Any]) -> str | None:
    for key in ("description", "visible_text", "described_by"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return f"a description field {key!r} that is not text"
    tags = payload.get("tags")
    if tags is not None and not isinstance(tags, str) and not (
            isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        return "description tags that are neither text nor a list of texts"
    if len(payload.get("described_by") or "") > MAX_NAME_CHARS:
        return f"a 'described_by' of over {MAX_NAME_CHARS} characters"
    if len(description_text(payload)) > MAX_TEXT_CHARS:
        return f"a description of over {MAX_TEXT_CHARS} characters"
    return None


def text_problem(text: dict[int, float] | None, payload: dict[str, Any]) -> str | None:
    if text is None or not text:
        described = description_text(payload).strip() and payload.get("described_by") is not None
        if described:
            return "a description without its text vector (text search misses it)"
        read = str(payload.get("ocr_text") or "").strip() and payload.get("ocr_by") is not None
        return "read text without its text vector (text search misses it)" if read else None
    if len(text) > MAX_TERMS:
        return f"a text vector of over {MAX_TERMS} terms"
    if not all(math.isfinite(weight) for weight in text.values()):
        return "a text vector with weights that are not finite"
    return None


def shown(name: str) -> str:
    """A name on one line of a message: control characters escaped, at most 200 characters."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return line if len(line) <= 200 else line[:200] + "..."
