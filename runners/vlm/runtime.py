"""The seam every VLM runtime plugs into: generate from prepared items (runners/vlm/inputs.Prepared).

A runtime (runners/vlm/torch_runtime.TorchRuntime, runners/vlm/openvino_runtime.OpenVinoRuntime) only turns
prepared items into generated token ids; preparing, checking, cutting at end tokens, decoding, per-item isolation
and streaming text are runners/vlm/model.VisionLanguageModel's, the same for all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from runners.vlm.inputs import Prepared


@dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy; above 0 samples (top_p None: 1.0)."""

    temperature: float = 0.0
    top_p: float | None = None


@dataclass(frozen=True)
class Row:
    """What a runtime generated for one item: its new token ids (an end token may close them) and whether its
    deadline or a cancellation stopped it before it ended by itself (`cut_at`: tokens it had by then)."""

    tokens: list[int]
    cut_at: int | None = None


class Runtime(Protocol):
    """A loaded model that generates token ids. `name` and `precision` are what /health shows."""

    name: str  # "torch" | "openvino"
    precision: str  # weights (and compute): "fp32", "bf16", "fp16", "nf4", "int8", "int4", ...
    device: str  # "cpu" | "cuda"
    video: bool  # whether it takes video parts

    def caches(self) -> dict[str, dict[str, int]]:
        """The follow-up caches this runtime keeps, by name: entries, bytes, limit_bytes, hits, misses,
        evictions (/health shows them; empty when it keeps none)."""
        ...

    def run_batch(self, items: Sequence[Prepared], limits: Sequence[int], deadlines: Sequence[float | None],
                  sampling: Sampling) -> list[Row]:
        """One Row per item, generated together. Raises when the batch as a whole failed."""
        ...

    def stream(self, item: Prepared, limit: int, sampling: Sampling, deadline: float | None,
               cancelled: threading.Event) -> Iterator[list[int]]:
        """New token ids as they are generated, until the answer ends, `limit` is reached, the deadline passes
        or `cancelled` is set. Closing the iterator stops generation."""
        ...
