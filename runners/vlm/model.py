"""Qwen2.5-VL visual question answering: a plain class, `VisionLanguageModel`, over any runtime.

Images, videos (frame lists or local mp4/webm files) and multi-turn chats go through one path: each
conversation is prepared on its own (runners/vlm/inputs.py: chat template, resizing, checks, processor), the
prepared items are generated as one batch by the runtime (runners/vlm/runtime.Runtime: PyTorch or OpenVINO),
and the generated ids are cut at end tokens and decoded here. Only runners/vlm/loader.py builds one. The product's
two entry points are `generate_each` (a batch, each item answered or refused on its own) and `start_stream` (one
answer, piece by piece).
Heavy imports (torch, transformers, openvino) happen inside functions only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import cast

from runners.isolation import batch_then_each
from runners.vlm.inputs import (
    Conversation,
    Generation,
    ItemError,
    Prepared,
    VlmInputs,
    VQAItem,
    bad_input,
    deadline_passed,
    item_messages,
    model_failed,
    past,
)
from runners.vlm.runtime import Row, Runtime, Sampling

log = logging.getLogger(__name__)


class VisionLanguageModel:
    """Qwen2.5-VL (any Qwen2_5_VLForConditionalGeneration folder) answering questions about images/videos.

    runners/vlm/loader.py builds it: `load_vlm` (one folder on PyTorch) or `open_vlm` (VQA_MODEL resolved,
    VQA_RUNTIME chosen, the memory guard and the fidelity gate applied).
    """

    def __init__(self, inputs: VlmInputs, runtime: Runtime, model_id: str) -> None:
        self.inputs = inputs
        self.runtime = runtime
        self.model_id = model_id
        self.settings = inputs.settings
        # (prompt_tokens, completion_tokens) per item of the last call; use generate_each() for race-free counts.
        self.token_counts: list[tuple[int, int]] = []

    # ------------------------------------------------------------------------------- what /health shows

    @property
    def device(self) -> str:
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def quantization(self) -> str:
        return str(getattr(self.runtime, "quantization", self.runtime.precision))

    def caches(self) -> dict[str, dict[str, int]]:
        return self.runtime.caches()

    # ------------------------------------------------------------------------------------ entry points

    def generate_each(
        self,
        conversations: Sequence[Conversation],
        max_new_tokens: int | None | Sequence[int | None] = None,
        temperature: float = 0.0,
        top_p: float | None = None,
        deadlines: Sequence[float | None] | None = None,
    ) -> list[Generation | ItemError]:
        """Answer each conversation on its own: a Generation, or the ItemError of an item that failed (its
        input refused, the model failing on it alone, its deadline passed). The other items get the answers
        they would get alone.

        `max_new_tokens` is one limit for all or one per conversation (None: VQA_MAX_NEW_TOKENS), each capped
        at VQA_MAX_NEW_TOKENS_CAP. Each item is prepared by itself; the prepared items run as one batch; if
        that batch raises, each item runs alone so only the culprit fails. A row whose deadline (a
        time.time() value) passes stops generating at the next token.
        """
        limits = self.inputs.token_limits(max_new_tokens, len(conversations))
        deadlines = list(deadlines) if deadlines is not None else [None] * len(conversations)
        if len(deadlines) != len(conversations):
            raise ValueError("deadlines needs one value per conversation")
        results: list[Generation | ItemError | None] = [None] * len(conversations)
        ready: dict[int, Prepared] = {}
        for index, conversation in enumerate(conversations):
            try:
                if past(deadlines[index]):
                    raise deadline_passed()
                ready[index] = self.prepare(conversation)
            except ItemError as exc:
                results[index] = exc
        rows = list(ready)
        answers = self.run_rows([ready[i] for i in rows], [limits[i] for i in rows], [deadlines[i] for i in rows],
                                Sampling(temperature, top_p))
        for index, answer in zip(rows, answers, strict=True):
            results[index] = answer
        done = cast("list[Generation | ItemError]", results)
        self.token_counts = [(r.prompt_tokens, r.completion_tokens) if isinstance(r, Generation) else (0, 0)
                             for r in done]
        return done

    def start_stream(
        self,
        conversation: Conversation,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float | None = None,
        deadline: float | None = None,
        cancelled: threading.Event | None = None,
    ) -> Generator[str, None, None]:
        """Prepare `conversation` now (ItemError 400 for a bad input, 504 past `deadline`) and return the
        generator of its answer's pieces. Generation stops when that generator is closed, `cancelled` is
        set (from any thread) or the deadline passes (the pieces then just end)."""
        limit = self.inputs.new_token_limit(max_new_tokens)
        if past(deadline):
            raise deadline_passed()
        item = self.prepare(conversation)
        sampling = Sampling(temperature, top_p)
        tokens = self.runtime.stream(item, limit, sampling, deadline, cancelled or threading.Event())
        return self.stream_text(tokens, item, limit)

    def prepare(self, conversation: Conversation) -> Prepared:
        """One conversation prepared for the runtime, or its ItemError (see VlmInputs.prepare)."""
        if not self.runtime.video and has_video(conversation):
            raise bad_input(f"video is not supported with VQA_RUNTIME={self.runtime.name}: "
                            "set VQA_RUNTIME=torch to ask about videos")
        return self.inputs.prepare(conversation)

    # -------------------------------------------------------------------------------------- internals

    def run_rows(self, items: list[Prepared], limits: list[int], deadlines: list[float | None],
                 sampling: Sampling) -> list[Generation | ItemError]:
        """Generate for prepared items as one batch; if the batch raises, each item alone (runners/isolation.py)."""
        def run(rows: list[tuple[Prepared, int, float | None]]) -> list[Generation | ItemError]:
            generated = self.runtime.run_batch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                               sampling)
            return [self.answer(row, item, limit) for row, (item, limit, _) in zip(generated, rows, strict=True)]

        def failed(_: object, exc: Exception) -> Generation | ItemError:
            log.error("generating a VQA answer failed", exc_info=exc)
            return model_failed()

        return batch_then_each(run, list(zip(items, limits, deadlines, strict=True)), failed)

    def answer(self, row: Row, item: Prepared, limit: int) -> Generation | ItemError:
        """A generated row as its answer, or 504 when its deadline stopped it before it ended by itself."""
        answer = self.inputs.generation(row.tokens, limit, item.prompt_tokens)
        at = row.cut_at
        ended = at is not None and ((answer.finish_reason == "stop" and answer.completion_tokens <= at) or limit <= at)
        if at is not None and not ended:
            return deadline_passed()
        return answer

    def stream_text(self, tokens: Iterator[list[int]], item: Prepared, limit: int) -> Generator[str, None, None]:
        """Token ids as text pieces: each piece is what the answer's text grew by (held back while it ends in
        an incomplete character); the pieces join to the answer generate_each gives."""
        generated: list[int] = []
        shown = ""
        try:
            for new in tokens:
                generated.extend(new)
                kept, _, reason = self.inputs.finish(generated, limit)
                text = self.inputs.decode(kept)
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    yield text[len(shown):]
                    shown = text
                if reason == "stop":
                    break
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
        kept, count, _ = self.inputs.finish(generated, limit)
        text = self.inputs.decode(kept)
        if len(text) > len(shown):
            yield text[len(shown):]
        self.token_counts = [(item.prompt_tokens, count)]


def has_video(conversation: Conversation) -> bool:
    for message in conversation:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and ("video" in part or part.get("type") == "video"):
                return True
    return False


def own_error(failure: ItemError) -> BaseException:
    """The exception a plain caller sees for a failed item: the one that caused it, when there is one."""
    cause = failure.__cause__
    return cause if isinstance(cause, Exception) else failure


def first_error(results: Sequence[Generation | ItemError]) -> list[Generation]:
    """Every answer, or the first failed item's own exception raised (for callers that want all or nothing)."""
    for result in results:
        if isinstance(result, ItemError):
            raise own_error(result)
    return cast("list[Generation]", list(results))


__all__ = ["Generation", "ItemError", "VQAItem", "VisionLanguageModel", "first_error", "item_messages", "own_error"]
