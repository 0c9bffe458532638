"""`python -m indexer --verify`: read the whole collection and check it, page by page.

Checked: the model record is there; every point has a finite CLIP vector of the recorded size and unit
norm; its id is the one the indexer makes from its path (store.base.point_id); its payload model is
the collection's; its description fields have their types and a described point has its text vector;
the number of points read equals the store's count. What is found is a list of problems, each with
up to EXAMPLES paths, and the way back (RECOVERY).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from store.base import RECOVERY, Record, StoreError, VectorStore, description_text, point_id

PAGE = 512
NORM_SLACK = 1e-3  # |norm - 1| allowed (float32 rounding is ~1e-7)
EXAMPLES = 5
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
    offset: Any = None
    while True:
        try:
            page, offset = store.records_page(offset, PAGE)
        except StoreError as exc:
            report.add("the store cannot be read to its end", str(exc)[:200])
            break
        for record in page:
            report.points += 1
            check_record(record, info.model_id, info.dim, report)
        if progress is not None:
            progress(report.points)
        if offset is None or not page:
            break
    report.counted = store.count()
    if report.counted != report.points:
        report.add("the store's count differs from the points it holds",
                   f"{report.counted} counted, {report.points} read")
    return report


def check_record(record: Record, model_id: str, dim: int, report: Report) -> None:
    payload = record.payload
    path = payload.get("path")
    name = path if isinstance(path, str) else f"id {record.id}"
    vector = record.vector
    if vector is None or vector.shape != (dim,):
        report.add(f"no CLIP vector of {dim} values", name)
    elif not np.isfinite(vector).all():
        report.add("a CLIP vector with values that are not finite", name)
    elif abs(float(np.linalg.norm(vector.astype(np.float64))) - 1.0) > NORM_SLACK:
        report.add("a CLIP vector that is not of unit length", name)
    if not isinstance(path, str):
        report.add("no path in the payload", name)
    elif point_id(path) != record.id:
        report.add("an id that is not the one its path gives", name)
    if payload.get("model_id") != model_id:
        report.add("a payload made by another model than the collection's", name)
    problem = description_problem(payload)
    if problem:
        report.add(problem, name)
    elif description_text(payload).strip() and payload.get("described_by") is not None and not record.text:
        report.add("a description without its text vector (text search misses it)", name)
    problem = ocr_problem(payload)
    if problem:
        report.add(problem, name)
    elif str(payload.get("ocr_text") or "").strip() and payload.get("ocr_by") is not None and not record.text:
        report.add("read text without its text vector (text search misses it)", name)


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
    return None
