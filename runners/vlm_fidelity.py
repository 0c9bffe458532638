"""The VLM fidelity gate: a fixed probe of images and questions, answered by a runtime and compared with the
answers PyTorch fp32 gave when the export was made (runners/vlm_export.py stores them beside the export).

Bound: at least VQA_FIDELITY_MIN_MATCH of the probe answers (greedy, first PROBE_TOKENS tokens) identical.
Probe images are plain coloured shapes at sizes that are multiples of 28 px, so every runtime sees the same pixels
(OpenVINO GenAI's own resize differs from the processor's for other sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from runners.vlm_inputs import Conversation, Generation, VQAItem, item_messages

if TYPE_CHECKING:
    from runners.vlm import VisionLanguageModel

PROBE_TOKENS = 16
PROBE_SHAPES = (("circle", (220, 30, 30)), ("square", (30, 60, 220)))
PROBE_QUESTIONS = ("What color is the shape?", "Describe the image.")


@dataclass(frozen=True)
class Fidelity:
    matched: int
    total: int
    differing: tuple[tuple[str, str], ...] = ()  # (reference, answer) of the first few that differ

    @property
    def share(self) -> float:
        return self.matched / self.total if self.total else 1.0

    def passes(self, min_match: float) -> bool:
        return self.share >= min_match

    def describe(self) -> str:
        text = f"{self.matched} of {self.total} probe answers identical to PyTorch fp32"
        if self.differing:
            reference, answer = self.differing[0]
            text += f" (e.g. {answer!r} where fp32 says {reference!r})"
        return text


def probe_image(shape: str, color: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (224, 224), (235, 235, 225))
    draw = ImageDraw.Draw(image)
    box = (56, 56, 168, 168)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    else:
        draw.rectangle(box, fill=color)
    return image


def probe_conversations() -> list[Conversation]:
    return [item_messages(VQAItem(images=[probe_image(shape, color)], question=question))
            for shape, color in PROBE_SHAPES for question in PROBE_QUESTIONS]


def probe_answers(vlm: VisionLanguageModel) -> list[str]:
    """The model's greedy answers to the probe (a failed item answers "" and so never matches)."""
    results = vlm.generate_each(probe_conversations(), PROBE_TOKENS)
    return [result.text if isinstance(result, Generation) else "" for result in results]


def compare(reference: list[str], answers: list[str]) -> Fidelity:
    pairs = list(zip(reference, answers, strict=True))
    differing = tuple((ref, got) for ref, got in pairs if ref != got)
    return Fidelity(matched=len(pairs) - len(differing), total=len(pairs), differing=differing[:3])
