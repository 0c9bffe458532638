"""Qwen2.5-VL visual question answering: a plain class, `VisionLanguageModel`.

Images, videos (frame lists or local mp4/webm files) and multi-turn chats go through one code path:
Qwen chat messages -> `qwen_vl_utils.process_vision_info` -> one left-padded processor batch -> `generate`.
Heavy imports (torch, transformers, qwen_vl_utils, av) happen inside functions only.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from PIL import Image

from config import Settings, get_settings
from core.images import BadImage, check_aspect
from runners.device import pick_device
from runners.hub import resolve_model
from runners.video import as_rgb, read_video, subsample

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Quantization = Literal["4bit", "8bit", "none"]
QUANTIZATIONS: tuple[str, ...] = ("4bit", "8bit", "none")
# The Qwen processors refuse images and frames whose long side is more than this many times the short one
# (qwen_vl_utils.vision_process.MAX_RATIO, transformers' Qwen2-VL smart_resize).
MAX_ASPECT_RATIO = 200
# Processor outputs with one row per item and one column per token: left-padded when items are batched.
SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")

Message = dict[str, Any]
Conversation = list[Message]


@dataclass(kw_only=True)
class VQAItem:
    """One question about zero or more images and/or one video.

    `video` is a list of frames (PIL images, already sampled; at most VQA_VIDEO_MAX_FRAMES are kept) or a
    local video file path (sampled at VQA_VIDEO_FPS, at most VQA_VIDEO_MAX_FRAMES frames).
    `max_new_tokens` None means VQA_MAX_NEW_TOKENS; any value is capped at VQA_MAX_NEW_TOKENS_CAP.
    """

    question: str
    images: list[Image.Image] = field(default_factory=list)
    video: list[Image.Image] | str | Path | None = None
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class Generation:
    """One generated answer with its OpenAI-style usage."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


class ItemError(Exception):
    """One item of a batch could not be answered; the other items of its batch are unaffected.

    `status` says whose fault it was: 400 its input (the message names the cause), 500 the model failed on
    this item alone, 504 its deadline passed before the answer was complete.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_input(message: str) -> ItemError:
    return ItemError(400, "invalid_argument", message)


def deadline_passed() -> ItemError:
    return ItemError(504, "timeout", "the answer was not complete before the request's deadline")


def past(deadline: float | None) -> bool:
    """Whether a deadline (a time.time() value; None: none) has passed."""
    return deadline is not None and time.time() > deadline


def item_messages(item: VQAItem) -> Conversation:
    """The Qwen chat messages for one VQAItem: its images, its video, then the question."""
    content: list[dict[str, Any]] = [{"type": "image", "image": image} for image in item.images]
    if item.video is not None:
        content.append({"type": "video", "video": item.video})
    content.append({"type": "text", "text": item.question})
    return [{"role": "user", "content": content}]


class VisionLanguageModel:
    """Qwen2.5-VL (any Qwen2_5_VLForConditionalGeneration folder) answering questions about images/videos.

    `quantization` None means VQA_QUANTIZATION on CUDA and "none" on CPU; pass "4bit"/"8bit" to force
    bitsandbytes on CPU too (bitsandbytes 0.50 loads and runs NF4 on CPU).
    Thread-safe: generate calls are serialised by a lock (one at a time per instance).
    """

    def __init__(
        self,
        model_dir: str | Path,
        settings: Settings | None = None,
        *,
        quantization: Quantization | None = None,
        model_id: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        settings = settings or get_settings()
        self.settings = settings
        self.device = pick_device(settings.device)
        self.model_id = model_id or str(model_dir)
        if quantization is None:
            quantization = settings.vqa_quantization if self.device == "cuda" else "none"
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        self.quantization: Quantization = quantization
        self.min_pixels = settings.vqa_min_pixels
        self.max_pixels = settings.vqa_max_pixels or None  # 0: the model's own bound
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"VQA_MIN_PIXELS={self.min_pixels} > VQA_MAX_PIXELS={self.max_pixels}")

        if self.device == "cuda":
            # LLM.int8 multiplies in fp16 (bitsandbytes casts bf16 inputs, warning on every call).
            bf16 = quantization != "8bit" and torch.cuda.is_bf16_supported()
            dtype = torch.bfloat16 if bf16 else torch.float16
        else:
            dtype = torch.float32
        kwargs: dict[str, Any] = {"dtype": dtype, "low_cpu_mem_usage": True}
        if quantization != "none":
            kwargs["quantization_config"] = bitsandbytes_config(quantization, dtype)
        if self.device == "cuda":
            kwargs["device_map"] = "auto"
        elif quantization != "none":
            kwargs["device_map"] = {"": "cpu"}
        model: Any = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir), **kwargs)
        if "device_map" not in kwargs:
            model = model.to(self.device)
        self.model = model.eval()

        self.processor = AutoProcessor.from_pretrained(str(model_dir))
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # batched generation appends after each row's last token

        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_token_ids: set[int] = set(eos if isinstance(eos, list) else [eos])
        self.pad_token_id: int = (
            gen.pad_token_id if gen.pad_token_id is not None
            else self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
            else min(self.eos_token_ids)
        )
        # (prompt_tokens, completion_tokens) per item of the last call; use generate() for race-free counts.
        self.token_counts: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._processor_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, quantization: Quantization | None = None
    ) -> VisionLanguageModel:
        settings = settings or get_settings()
        folder = resolve_model(settings.vqa_model, settings.model_source, settings.model_cache_dir, "VQA_MODEL")
        return cls(folder, settings, quantization=quantization, model_id=settings.vqa_model)

    # ------------------------------------------------------------------------------------------- public

    def answer(self, image: Image.Image, question: str, max_new_tokens: int | None = None) -> str:
        return self.answer_batch([VQAItem(images=[image], question=question, max_new_tokens=max_new_tokens)])[0]

    def answer_batch(self, items: Sequence[VQAItem]) -> list[str]:
        """Answer every item (greedy) in one left-padded batch."""
        conversations = [item_messages(item) for item in items]
        limits = [item.max_new_tokens for item in items]
        return [g.text for g in self.generate(conversations, limits)]

    def chat_batch(
        self,
        conversations: Sequence[Conversation],
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float | None = None,
    ) -> list[str]:
        """Continue each Qwen-format conversation (messages with role and content: a string or a list of
        {"type": "text"|"image"|"video", ...} parts holding PIL images / frame lists / local video paths)."""
        return [g.text for g in self.generate(conversations, max_new_tokens, temperature, top_p)]

    def stream(self, item: VQAItem) -> Generator[str, None, None]:
        """Yield the greedy answer to `item` piece by piece; the pieces join to `answer_batch([item])[0]`."""
        return self.stream_chat(item_messages(item), item.max_new_tokens)

    def stream_chat(
        self,
        conversation: Conversation,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float | None = None,
        deadline: float | None = None,
    ) -> Generator[str, None, None]:
        """Like chat_batch for one conversation, yielding text pieces as they are generated. A bad input
        raises its own exception at the first next(); see start_stream for an eager check."""
        try:
            pieces = self.start_stream(conversation, max_new_tokens, temperature, top_p, deadline)
        except ItemError as exc:
            raise own_error(exc) from None
        yield from pieces

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
        limit = self.new_token_limit(max_new_tokens)
        if past(deadline):
            raise deadline_passed()
        inputs = self.prepare_item(conversation).to(self.model.device)
        return self._stream_pieces(inputs, limit, temperature, top_p, deadline, cancelled or threading.Event())

    def _stream_pieces(
        self, inputs: Any, limit: int, temperature: float, top_p: float | None, deadline: float | None,
        cancelled: threading.Event,
    ) -> Generator[str, None, None]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        prompt_tokens = int(inputs["attention_mask"][0].sum())
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        stop = row_stop([deadline], [limit], inputs["input_ids"].shape[1], cancelled)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["output"] = self._generate(inputs, limit, temperature, top_p, streamer=streamer,
                                                   stopping_criteria=StoppingCriteriaList([stop]))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                outcome["error"] = exc
                streamer.end()

        thread = threading.Thread(target=run, name="vlm-stream", daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            cancelled.set()  # the consumer closed the generator or the pieces ended: stop generating
            thread.join()
        if "error" in outcome:
            raise outcome["error"]
        generated = outcome["output"][0, inputs["input_ids"].shape[1]:]
        self.token_counts = [(prompt_tokens, self._finish(generated.tolist(), limit)[1])]
        if 0 in stop.tripped:
            log.warning("a streamed answer was cut (its deadline passed or it was cancelled)")

    def generate(
        self,
        conversations: Sequence[Conversation],
        max_new_tokens: int | None | Sequence[int | None] = None,
        temperature: float = 0.0,
        top_p: float | None = None,
    ) -> list[Generation]:
        """The shared path: one batch, one generate; per-conversation token limits and usage.

        `max_new_tokens` is one limit for all or one per conversation (None: VQA_MAX_NEW_TOKENS), each capped
        at VQA_MAX_NEW_TOKENS_CAP. temperature 0 is greedy; above 0 samples (top_p default 1.0).
        Raises the first failed item's own exception; generate_each answers each item on its own.
        """
        results = self.generate_each(conversations, max_new_tokens, temperature, top_p)
        for result in results:
            if isinstance(result, ItemError):
                raise own_error(result)
        return cast("list[Generation]", results)

    def generate_each(
        self,
        conversations: Sequence[Conversation],
        max_new_tokens: int | None | Sequence[int | None] = None,
        temperature: float = 0.0,
        top_p: float | None = None,
        deadlines: Sequence[float | None] | None = None,
    ) -> list[Generation | ItemError]:
        """As generate, but each item is answered on its own: a Generation, or the ItemError of an item
        that failed (its input refused, the model failing on it alone, its deadline passed). The other
        items get the answers they would get alone.

        Each item is prepared (decoded, checked, run through the processor) by itself; the prepared
        items run as one batch; if that batch raises, each item runs alone so only the culprit fails.
        A row whose deadline (a time.time() value) passes stops generating at the next token.
        """
        limits = self.token_limits(max_new_tokens, len(conversations))
        deadlines = list(deadlines) if deadlines is not None else [None] * len(conversations)
        if len(deadlines) != len(conversations):
            raise ValueError("deadlines needs one value per conversation")
        results: list[Generation | ItemError | None] = [None] * len(conversations)
        ready: dict[int, Any] = {}
        for index, conversation in enumerate(conversations):
            try:
                if past(deadlines[index]):
                    raise deadline_passed()
                ready[index] = self.prepare_item(conversation)
            except ItemError as exc:
                results[index] = exc
        rows = list(ready)
        answers = self._run_rows([ready[i] for i in rows], [limits[i] for i in rows],
                                 [deadlines[i] for i in rows], temperature, top_p)
        for index, answer in zip(rows, answers, strict=True):
            results[index] = answer
        done = cast("list[Generation | ItemError]", results)
        self.token_counts = [(r.prompt_tokens, r.completion_tokens) if isinstance(r, Generation) else (0, 0)
                             for r in done]
        return done

    def token_limits(self, max_new_tokens: int | None | Sequence[int | None], count: int) -> list[int]:
        if max_new_tokens is None or isinstance(max_new_tokens, int):
            return [self.new_token_limit(max_new_tokens)] * count
        if len(max_new_tokens) != count:
            raise ValueError("max_new_tokens needs one value per conversation")
        return [self.new_token_limit(n) for n in max_new_tokens]

    def new_token_limit(self, requested: int | None) -> int:
        value = self.settings.vqa_max_new_tokens if requested is None else int(requested)
        if value < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {value}")
        return min(value, self.settings.vqa_max_new_tokens_cap)

    def prepare_item(self, conversation: Conversation) -> Any:
        """One conversation's processor inputs (on the CPU), or ItemError: 400 naming what in the input
        was refused (a special token in its text, an image shape the processor refuses, a bad video, ...),
        500 for anything unexpected."""
        import av

        try:
            prepared = self._prepare(conversation)
            self.check_text(prepared)
            check_shapes(prepared)
            return self.processor_inputs([prepared])
        except ItemError:
            raise
        except (ValueError, TypeError, OSError, EOFError, av.FFmpegError) as exc:
            raise bad_input(f"the model's processor refused the input: {exc}") from exc
        except Exception as exc:
            log.exception("preparing a VQA item failed")
            raise ItemError(500, "internal_error", "preparing the input failed inside the server") from exc

    def check_text(self, conversation: Conversation) -> None:
        """Refuse text holding one of the tokenizer's added tokens (<|im_start|>, <|vision_start|>,
        <|image_pad|>, ...): they would forge chat turns or vision placeholders the processor then
        refuses or, worse, reads as real."""
        tokens = self.added_tokens()
        for message in conversation:
            for text in message_texts(message):
                found = [(text.find(token), token) for token in tokens if token in text]
                if found:
                    raise bad_input(f"text: {min(found)[1]!r} is a special token of the model and may not appear "
                                    "in a question or message")

    def added_tokens(self) -> list[str]:
        """Every added token of the tokenizer (all Qwen's special and control tokens)."""
        if not hasattr(self, "_added_tokens"):
            decoder = self.tokenizer.added_tokens_decoder
            self._added_tokens = sorted({str(token) for token in decoder.values() if str(token)})
        return self._added_tokens

    def build_inputs(self, conversations: Sequence[Conversation]) -> Any:
        """The processor's left-padded batch (a BatchFeature on the model's device) for `conversations`."""
        prepared = [self._prepare(conversation) for conversation in conversations]
        return self.processor_inputs(prepared).to(self.model.device)

    def processor_inputs(self, prepared: Sequence[Conversation]) -> Any:
        """The processor's left-padded batch (on the CPU) for conversations already through _prepare."""
        from qwen_vl_utils import process_vision_info

        texts = [
            self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            for conversation in prepared
        ]
        patch = int(getattr(self.processor.image_processor, "patch_size", 14))
        images, videos, _ = process_vision_info(
            list(prepared), return_video_kwargs=True, return_video_metadata=True, image_patch_size=patch
        )
        images_kwargs: dict[str, Any] = {}
        videos_kwargs: dict[str, Any] = {}
        if self.min_pixels is not None or self.max_pixels is not None:
            # VQA_MIN/MAX_PIXELS (else the processor's own config applies), per modality.
            low, high = self.pixel_bounds("image")
            images_kwargs["size"] = {"shortest_edge": low, "longest_edge": high}
            low, high = self.pixel_bounds("video")
            videos_kwargs["size"] = {"shortest_edge": low, "longest_edge": high}
        kwargs: dict[str, Any] = {}
        if videos:
            kwargs["videos"] = [video for video, _ in videos]
            videos_kwargs["video_metadata"] = [metadata for _, metadata in videos]
            videos_kwargs["do_sample_frames"] = False  # frames were sampled above
            if hasattr(self.processor.video_processor, "cap_pixels_per_frame"):
                videos_kwargs["cap_pixels_per_frame"] = True  # qwen-vl-utils' per-frame budget, applied above
            kwargs["videos_kwargs"] = videos_kwargs
        if images:
            kwargs["images_kwargs"] = images_kwargs
        with self._processor_lock:  # a fast tokenizer may raise "Already borrowed" when shared across threads
            inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt", **kwargs)
        inputs.pop("video_metadata", None)
        return inputs

    def collate(self, items: Sequence[Any]) -> Any:
        """One left-padded batch from single-item processor outputs: what the processor makes of the
        items together (token rows padded on the left as the tokenizer pads, vision tensors concatenated
        in item order)."""
        import torch
        from transformers import BatchFeature

        if len(items) == 1:
            return items[0]
        width = max(int(item["input_ids"].shape[1]) for item in items)
        keys = list(dict.fromkeys(key for item in items for key in item))
        data: dict[str, Any] = {}
        for key in keys:
            values = [item[key] for item in items if key in item]
            if key in SEQUENCE_KEYS:
                pad = self.tokenizer.pad_token_id if key == "input_ids" else 0
                values = [torch.nn.functional.pad(v, (width - v.shape[1], 0), value=pad) for v in values]
            data[key] = torch.cat(values) if isinstance(values[0], torch.Tensor) else sum(values, [])
        return BatchFeature(data=data)

    def _run_rows(
        self, items: list[Any], limits: list[int], deadlines: list[float | None], temperature: float,
        top_p: float | None,
    ) -> list[Generation | ItemError]:
        """Generate for prepared items as one batch; if the batch raises, each item alone."""
        if not items:
            return []
        try:
            return self._run_batch(items, limits, deadlines, temperature, top_p)
        except Exception as exc:
            if len(items) == 1:
                log.exception("generating a VQA answer failed")
                return [ItemError(500, "internal_error", "the model failed on this request")]
            log.warning("a batch of %d failed (%r): running each item alone", len(items), exc)
        return [self._run_rows([item], [limit], [deadline], temperature, top_p)[0]
                for item, limit, deadline in zip(items, limits, deadlines, strict=True)]

    def _run_batch(
        self, items: list[Any], limits: list[int], deadlines: list[float | None], temperature: float,
        top_p: float | None,
    ) -> list[Generation | ItemError]:
        from transformers import StoppingCriteriaList

        inputs = self.collate(items).to(self.model.device)
        start = inputs["input_ids"].shape[1]  # left padding: every row's prompt ends here
        stop = row_stop(deadlines, limits, start)
        output = self._generate(inputs, max(limits), temperature, top_p,
                                stopping_criteria=StoppingCriteriaList([stop]))
        results: list[Generation | ItemError] = []
        for row, limit in enumerate(limits):
            tokens = output[row, start:].tolist()[:limit]
            kept, count, reason = self._finish(tokens, limit)
            if stop.cut_short(row, count, reason, limit):
                results.append(deadline_passed())
                continue
            text = self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            prompt = int(inputs["attention_mask"][row].sum())
            results.append(Generation(text=text, prompt_tokens=prompt, completion_tokens=count, finish_reason=reason))
        return results

    # ------------------------------------------------------------------------------------------ helpers

    def pixel_bounds(self, kind: Literal["image", "video"]) -> tuple[int, int]:
        """(min_pixels, max_pixels) per image or video frame: VQA_MIN_PIXELS, else the processor's own;
        the processor's own maximum capped at VQA_MAX_PIXELS (never raised past what the model allows)."""
        proc = self.processor.image_processor if kind == "image" else self.processor.video_processor
        size = proc.size
        low = self.min_pixels or size_value(size, "shortest_edge") or 56 * 56
        own = size_value(size, "longest_edge") or 28 * 28 * 1280
        high = min(own, self.max_pixels) if self.max_pixels else own
        return min(low, high), high

    def _prepare(self, conversation: Conversation) -> Conversation:
        """Copy a conversation, giving each image/video part its pixel bounds and decoding video files."""
        prepared = []
        for message in conversation:
            content = message.get("content")
            if not isinstance(content, list):
                prepared.append(dict(message))
                continue
            parts = []
            for part in content:
                part = dict(part)
                if "image" in part or "image_url" in part or part.get("type") in ("image", "image_url"):
                    part = self._prepare_image(part)
                elif "video" in part or part.get("type") == "video":
                    part = self._prepare_video(part)
                parts.append(part)
            prepared.append({**message, "content": parts})
        return prepared

    def _prepare_image(self, part: dict[str, Any]) -> dict[str, Any]:
        image = part.pop("image_url", None) if "image" not in part else part["image"]
        if not isinstance(image, Image.Image):
            # URLs, data URLs and paths are the caller's to fetch and decode (qwen-vl-utils would fetch any URL).
            raise TypeError(f"an image part needs a PIL image, got {type(image).__name__}")
        low, high = self.pixel_bounds("image")
        part.update(type="image", image=image, min_pixels=low, max_pixels=high)
        return part

    def _prepare_video(self, part: dict[str, Any]) -> dict[str, Any]:
        video = part.get("video")
        fps = self.settings.vqa_video_fps
        max_frames = self.settings.vqa_video_max_frames
        if isinstance(video, (str, Path)):
            frames, sample_fps = read_video(video, fps, max_frames)
        elif isinstance(video, (list, tuple)) and video:
            frames = [as_rgb(frame) for frame in subsample(video, max_frames)]
            sample_fps = float(part.get("sample_fps", fps))
        else:
            raise TypeError("a video part needs a non-empty list of frames or a local video file path")
        low, high = self.pixel_bounds("video")
        for key in ("fps", "nframes", "min_frames", "max_frames", "video_start", "video_end"):
            part.pop(key, None)
        part.update(type="video", video=frames, sample_fps=sample_fps, min_pixels=low, max_pixels=high)
        return part

    def _generate(
        self, inputs: Any, max_new_tokens: int, temperature: float, top_p: float | None, **extra: Any
    ) -> torch.Tensor:
        import torch

        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.pad_token_id = self.pad_token_id
        # Override the checkpoint's sampling defaults (Qwen ships temperature 0.1, top_p 0.001, top_k 1).
        # None would fall back to them, so the neutral values are set explicitly.
        if temperature and temperature > 0:
            config.update(do_sample=True, temperature=float(temperature), top_k=0,
                          top_p=1.0 if top_p is None else float(top_p))
        else:
            config.update(do_sample=False, temperature=1.0, top_p=1.0, top_k=50)
        with self._lock, torch.inference_mode():
            return cast("torch.Tensor", self.model.generate(**inputs, generation_config=config, **extra))

    def _finish(self, tokens: list[int], limit: int) -> tuple[list[int], int, Literal["stop", "length"]]:
        """Cut generated ids at the first end-of-sequence token: (kept ids, completion tokens, finish reason)."""
        for index, token in enumerate(tokens[:limit]):
            if token in self.eos_token_ids:
                return tokens[:index], index + 1, "stop"
        kept = tokens[:limit]
        return kept, len(kept), "length"


def own_error(failure: ItemError) -> BaseException:
    """The exception a plain caller sees for a failed item: the one that caused it, when there is one."""
    cause = failure.__cause__
    return cause if isinstance(cause, Exception) else failure


def message_texts(message: Message) -> list[str]:
    """The text of one Qwen message: its string content, or its text parts."""
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]


def check_shapes(conversation: Conversation) -> None:
    """Refuse, naming the cause, images and video frames the Qwen processor cannot resize."""
    for message in conversation:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part.get("image"), Image.Image):
                refuse_aspect("image", part["image"])
            elif isinstance(part.get("video"), list) and part["video"]:
                refuse_aspect("video", part["video"][0])


def refuse_aspect(kind: str, image: Image.Image) -> None:
    """The one aspect rule (core/images.check_aspect) as this item's 400."""
    try:
        check_aspect(image, MAX_ASPECT_RATIO)
    except BadImage as exc:
        raise bad_input(f"{kind}: {exc}") from None


def row_stop(
    deadlines: Sequence[float | None], limits: Sequence[int], start: int, cancelled: threading.Event | None = None
) -> Any:
    """A transformers StoppingCriteria that stops each row at its own token limit (generate runs to the
    largest) and each row whose deadline has passed (every row once `cancelled` is set), remembering how
    many tokens a row had generated when its deadline stopped it."""
    import torch
    from transformers import StoppingCriteria

    class RowStop(StoppingCriteria):
        def __init__(self) -> None:
            self.tripped: dict[int, int] = {}  # row -> tokens generated when its deadline stopped it

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            now, generated = time.time(), input_ids.shape[1] - start
            late = [bool(cancelled and cancelled.is_set()) or (d is not None and now > d) for d in deadlines]
            for row, stopped in enumerate(late):
                if stopped:
                    self.tripped.setdefault(row, generated)
            stop = [stopped or generated >= limit for stopped, limit in zip(late, limits, strict=True)]
            return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)

        def cut_short(self, row: int, count: int, reason: str, limit: int) -> bool:
            """Whether `row` was stopped before it ended by itself (an end token or its token limit)."""
            at = self.tripped.get(row)
            return at is not None and not ((reason == "stop" and count <= at) or limit <= at)

    return RowStop()


def size_value(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def bitsandbytes_config(quantization: str, compute_dtype: Any) -> Any:
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


__all__ = ["Generation", "ItemError", "Quantization", "VQAItem", "VisionLanguageModel", "item_messages", "read_video"]
