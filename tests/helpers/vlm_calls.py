"""Convenience calls on runners.vlm.VisionLanguageModel that the product does not use (it calls generate_each
and start_stream): answer a batch of VQAItems, continue chats, stream one answer, build a processor batch."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from runners.vlm import VisionLanguageModel, first_error
from runners.vlm.inputs import Conversation, Generation, VQAItem, item_messages
from runners.vlm.torch_runtime import TorchRuntime


def generate(vlm: VisionLanguageModel, conversations: Sequence[Conversation],
             max_new_tokens: int | None | Sequence[int | None] = None, temperature: float = 0.0,
             top_p: float | None = None) -> list[Generation]:
    """One batch; raises the first failed item's own exception."""
    return first_error(vlm.generate_each(conversations, max_new_tokens, temperature, top_p))


def answer_batch(vlm: VisionLanguageModel, items: Sequence[VQAItem]) -> list[str]:
    """Answer every item (greedy) in one left-padded batch."""
    return [g.text for g in generate(vlm, [item_messages(i) for i in items], [i.max_new_tokens for i in items])]


def chat_batch(vlm: VisionLanguageModel, conversations: Sequence[Conversation], max_new_tokens: int | None = None,
               temperature: float = 0.0, top_p: float | None = None) -> list[str]:
    return [g.text for g in generate(vlm, conversations, max_new_tokens, temperature, top_p)]


def stream(vlm: VisionLanguageModel, item: VQAItem) -> Generator[str, None, None]:
    """The greedy answer to `item` piece by piece; a bad input raises its own exception at the first next()."""
    return stream_chat(vlm, item_messages(item), item.max_new_tokens)


def stream_chat(vlm: VisionLanguageModel, conversation: Conversation, max_new_tokens: int | None = None,
                temperature: float = 0.0, top_p: float | None = None) -> Generator[str, None, None]:
    from runners.vlm import ItemError, own_error

    try:
        pieces = vlm.start_stream(conversation, max_new_tokens, temperature, top_p)
    except ItemError as exc:
        raise own_error(exc) from None
    yield from pieces


def answer(vlm: VisionLanguageModel, image: Any, question: str, max_new_tokens: int | None = None) -> str:
    return answer_batch(vlm, [VQAItem(images=[image], question=question, max_new_tokens=max_new_tokens)])[0]


def torch_engine(vlm: VisionLanguageModel) -> TorchRuntime:
    """The PyTorch runtime under `vlm` (its transformers model is `.model`)."""
    assert isinstance(vlm.runtime, TorchRuntime), vlm.runtime
    return vlm.runtime


def build_inputs(vlm: VisionLanguageModel, conversations: Sequence[Conversation]) -> Any:
    """The processor's left-padded batch (CPU) made from all `conversations` at once (not collated)."""
    prepared = [vlm.inputs.prepare(c) for c in conversations]
    images = [image for p in prepared for image in p.images]
    videos = [video for p in prepared for video in p.videos]
    return vlm.inputs.features([p.text for p in prepared], images, videos)
