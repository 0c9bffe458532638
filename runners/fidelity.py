"""The vocabulary every exported CPU runtime shares (CLIP's and the VLM's): export once, check against PyTorch,
refuse and fall back.

A runtime other than PyTorch (an ONNX or OpenVINO export) answers a fixed probe when it is exported and every time
it is loaded; its answers are compared with PyTorch fp32's on the user's own model (stored beside the export). A
`Fidelity` says how they agree; a runtime that cannot load, cannot be exported or agrees too little raises
`RuntimeRefused`, and the caller falls back to PyTorch (`auto`) or stops with the message (an explicit choice).
Exports are staged and published by runners/export_cache.py.
"""

from __future__ import annotations

from dataclasses import dataclass


class RuntimeRefused(RuntimeError):
    """A runtime that cannot serve a model here: not installed, no export, an export that fails or does not load,
    or probe answers too far from PyTorch fp32's. The message says which and what to set instead."""


@dataclass(frozen=True)
class Fidelity:
    """How a runtime's answers to the fixed probe compare with PyTorch fp32's.

    `agreed` of `total` probe items gave PyTorch fp32's answer (the VLM: the same greedy text; CLIP: the same top-1
    result of a probe query). `min_cosine` is CLIP's lowest cosine of a probe vector with PyTorch fp32's (None
    where answers are text). `differing` holds the first few (reference, answer) pairs that differ."""

    agreed: int
    total: int
    item: str = "answers"  # what a probe item is, for the log line
    min_cosine: float | None = None
    differing: tuple[tuple[str, str], ...] = ()

    @property
    def share(self) -> float:
        return self.agreed / self.total if self.total else 1.0

    def passes(self, min_share: float, min_cosine: float | None = None) -> bool:
        close = min_cosine is None or self.min_cosine is None or self.min_cosine >= min_cosine
        return self.share >= min_share and close

    def describe(self) -> str:
        text = f"{self.agreed} of {self.total} probe {self.item} identical to PyTorch fp32's ({self.share:.1%})"
        if self.min_cosine is not None:
            text += f", lowest cosine {self.min_cosine:.10g}"
        if self.differing:
            reference, answer = self.differing[0]
            text += f" (e.g. {answer!r} where fp32 says {reference!r})"
        return text
