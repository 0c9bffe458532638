"""The VLM's probe for the fidelity gate (runners/fidelity.py): fixed images and questions, answered by a runtime
and compared with the answers PyTorch fp32 gave when the export was made (runners/vlm/export.py stores them).

Bound: at least VQA_FIDELITY_MIN_MATCH of the probe answers (greedy, first PROBE_TOKENS tokens) identical.
Probe images are plain coloured shapes at sizes that are multiples of 28 px, so every runtime sees the same pixels
(OpenVINO GenAI's own resize differs from the processor's for other sizes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from runners.fidelity import Fidelity
from runners.vlm.inputs import Conversation, Generation, VQAItem, item_messages

if TYPE_CHECKING:
    from runners.vlm.model import VisionLanguageModel

PROBE_TOKENS = 16
PROBE_SHAPES = (("circle", (220, 30, 30)), ("square", (30, 60, 220)))
PROBE_QUESTIONS = ("What color is the shape?", "Describe the image.")


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
    return Fidelity(agreed=len(pairs) - len(differing), total=len(pairs), item="answers", differing=differing[:3])
