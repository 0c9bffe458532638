"""Photo descriptions written by the VQA model: a plain class, `Describer` (no BentoML).

The indexer's describe stage (indexer/describe_stage.py) asks VisionLanguageModel one prompt (DESCRIBE_PROMPT) about
every photo, in batches, through the same chat formatting /vqa uses (runners/vlm/inputs.item_messages). An answer that
parses as a JSON object fills description / visible_text / tags; any other answer is the description, whole.
`described_by` (model id + "#" + a short hash of the prompt) is stored with each description, so a change of
model or prompt is seen as "not described yet".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from config import Settings
from runners.vlm.inputs import ItemError, VQAItem, item_messages

if TYPE_CHECKING:
    from runners.vlm.model import VisionLanguageModel

PROMPT_HASH_CHARS = 12
MAX_TAGS = 32  # a model that loops on tags is cut here
# A JSON answer wrapped in a Markdown code fence: ```json ... ``` (the language name optional).
FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
# Tags given as one string: split at commas (ASCII and Chinese), semicolons and the Chinese list comma.
TAG_SEPARATORS = re.compile(r"[,，;；、\n]+")


@dataclass(frozen=True)
class Description:
    """What the model said about one photo."""

    description: str
    visible_text: str = ""
    tags: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.description or self.visible_text or self.tags)

    def payload(self, described_by: str) -> dict[str, Any]:
        """The payload fields stored with the photo's point (store.interface.DESCRIPTION_FIELDS)."""
        return {"description": self.description, "visible_text": self.visible_text, "tags": list(self.tags),
                "described_by": described_by}


def describer_id(model_id: str, prompt: str) -> str:
    """`described_by`: the model id and a short sha256 of the prompt ("Qwen/Qwen2.5-VL-3B-Instruct#1a2b3c4d5e6f")."""
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:PROMPT_HASH_CHARS]
    return f"{model_id}#{digest}"


def parse_answer(answer: str) -> Description:
    """An answer that is a JSON object (surrounding whitespace or a ```json fence allowed) with any of
    description / visible_text / tags fills them; any other answer is the description, whole."""
    found = json_object(answer)
    if found is None or not any(key in found for key in ("description", "visible_text", "tags")):
        return Description(description=answer.strip())
    return Description(description=as_text(found.get("description")), visible_text=as_text(found.get("visible_text")),
                       tags=as_tags(found.get("tags")))


def json_object(answer: str) -> dict[str, Any] | None:
    """The JSON object the answer is (inside a code fence or not), or None."""
    text = answer.strip()
    fenced = FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def as_text(value: Any) -> str:
    """A field's value as one line of text: strings as they are, lists joined, null as ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return " ".join(part for part in (as_text(item) for item in value) if part)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def as_tags(value: Any) -> list[str]:
    """Tags as a list of distinct non-empty strings: a list's items as text, a string split at commas."""
    if value is None:
        return []
    items = value if isinstance(value, list) else TAG_SEPARATORS.split(value) if isinstance(value, str) else [value]
    tags: list[str] = []
    for item in items:
        tag = as_text(item)
        if tag and tag not in tags:
            tags.append(tag)
    return tags[:MAX_TAGS]


class Describer:
    """VisionLanguageModel asked `prompt` about each image, a batch at a time."""

    def __init__(self, vlm: VisionLanguageModel, prompt: str, max_new_tokens: int = 256) -> None:
        self.vlm = vlm
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.described_by = describer_id(vlm.model_id, prompt)

    def describe(self, images: Sequence[Image.Image]) -> list[Description | str]:
        """One Description per image, or the reason (a string) the model gave none for it; a failing
        image leaves its batch-mates' answers as they would be alone (VisionLanguageModel.generate_each)."""
        conversations = [item_messages(VQAItem(question=self.prompt, images=[image])) for image in images]
        results = self.vlm.generate_each(conversations, self.max_new_tokens)
        out: list[Description | str] = []
        for result in results:
            if isinstance(result, ItemError):
                out.append(f"the model gave no answer: {result.message}")
            else:
                parsed = parse_answer(result.text)
                out.append("the model gave an empty answer" if parsed.is_empty() else parsed)
        return out


def described_by_of(settings: Settings) -> str:
    """The `described_by` open_describer(settings) (runners/vlm/loader.py) will write, known without loading it."""
    return describer_id(settings.vqa_model, settings.describe_prompt)
