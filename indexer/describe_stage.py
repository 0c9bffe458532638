"""The describe stage (`python -m indexer --describe`): VQA_MODEL's description of every indexed photo, a payload
stage (indexer/payload_stage.py: incremental, copies shared, resumable, per-photo failures listed).

A point whose payload's `described_by` is not the current one (runners/vlm/describe.py: the model id and a hash of
DESCRIBE_PROMPT) is described; its fields (store.interface.DESCRIPTION_FIELDS) go to the store with
set_descriptions, which also puts the words into the point's text vector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from indexer.payload_stage import (
    Outcome,
    PayloadEngine,
    PayloadKind,
    PayloadOptions,
    PayloadStage,
    PixelBudget,
)
from indexer.pipeline import Summary
from store.interface import VectorStore, description_of


class ImageDescriber(Protocol):
    """What the stage needs of runners.vlm.describe.Describer."""

    described_by: str

    def describe(self, images: list[Image.Image]) -> list[Any]: ...


class Descriptions(PayloadKind):
    """The describe stage's kind: the VLM's description fields; counted in the summary's `described`,
    `descriptions_reused` and `describe_failed`."""

    stage = "describe"
    marker = "described_by"
    failure = "cannot describe"
    uses_gpu = True

    def fields_of(self, payload: dict[str, Any]) -> dict[str, Any]:
        return description_of(payload)

    def outcomes(self, model: ImageDescriber, images: list[Image.Image]) -> list[Outcome]:
        return [result if isinstance(result, str) else result.payload(self.by) for result in model.describe(images)]

    def counted(self, summary: Summary, fields: Iterable[dict[str, Any]], copied: bool) -> None:
        count = sum(1 for _ in fields)
        summary.described += count
        summary.descriptions_reused += count if copied else 0

    def failed(self, summary: Summary, path: str, reason: str) -> None:
        summary.describe_failed += 1
        super().failed(summary, path, reason)


class DescribeStage(PayloadStage):
    """Describe every point of `store` not described by `described_by`."""

    def __init__(self, store: VectorStore, root: Path, described_by: str, load: Callable[[], ImageDescriber],
                 summary: Summary, options: PayloadOptions | None = None, engine: PayloadEngine | None = None
                 ) -> None:
        super().__init__(Descriptions(described_by), store, root, load, summary, options, engine)


def pixel_budget(describe_max_pixels: int, vqa_max_pixels: int) -> PixelBudget:
    """The pixels a photo is described at: DESCRIBE_MAX_PIXELS when set and below VQA_MAX_PIXELS, else
    VQA_MAX_PIXELS; 0 means no bound. Only a DESCRIBE_MAX_PIXELS below VQA_MAX_PIXELS shrinks the photo here:
    VQA_MAX_PIXELS is the model's processor's own bound, applied by it in one resize, as for /vqa."""
    bounds = [value for value in (describe_max_pixels, vqa_max_pixels) if value > 0]
    decode = min(bounds, default=0)
    return PixelBudget(decode=decode, shrink=decode if decode and decode != vqa_max_pixels else 0)
