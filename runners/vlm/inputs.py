"""What goes into the VLM, apart from generating: a conversation prepared, checked and tokenised.

`VlmInputs` turns one Qwen-format conversation into a `Prepared` item (its images resized to the pixel budget,
its video decoded and sampled, its text checked for special tokens, the processor's tensors), or refuses it with
an `ItemError` 400 naming the cause. Every runtime (runners/vlm/torch_runtime.py, runners/vlm/openvino_runtime.py)
generates from the same `Prepared` items, so token and pixel caps, refusals and prompt-token counts are one rule
for all.
Heavy imports (transformers, qwen_vl_utils, av) happen inside functions only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from config import Settings
from core.images import BadImage, check_aspect
from runners.vlm.video import as_rgb, read_video, subsample

log = logging.getLogger(__name__)

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


def model_failed() -> ItemError:
    return ItemError(500, "internal_error", "the model failed on this request")


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


@dataclass
class Prepared:
    """One conversation ready for any runtime.

    `text` is the chat-templated prompt (vision placeholders included), `images` the images already resized to
    the size the processor uses (multiples of the patch grid within the pixel budget), `videos` the sampled
    frame lists, `features` the processor's tensors for this item alone (what PyTorch generates from).
    """

    text: str
    images: list[Image.Image]
    videos: list[Any]
    features: Any

    @property
    def prompt_tokens(self) -> int:
        return int(self.features["attention_mask"][0].sum())


class VlmInputs:
    """The processor side of a Qwen2.5-VL folder: preparing, checking and collating inputs, decoding outputs.

    Thread-safe: the processor is used under a lock (a fast tokenizer may raise "Already borrowed" when shared).
    """

    def __init__(self, processor: Any, settings: Settings, eos_token_ids: set[int], pad_token_id: int,
                 repetition_penalty: float = 1.0) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # batched generation appends after each row's last token
        self.settings = settings
        self.eos_token_ids = eos_token_ids
        self.pad_token_id = pad_token_id
        self.repetition_penalty = repetition_penalty  # the checkpoint's, kept by every runtime (Qwen ships 1.05)
        self.min_pixels = settings.vqa_min_pixels
        self.max_pixels = settings.vqa_max_pixels or None  # 0: the model's own bound
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"VQA_MIN_PIXELS={self.min_pixels} > VQA_MAX_PIXELS={self.max_pixels}")
        self._lock = threading.Lock()
        self._added_tokens: list[str] | None = None

    @classmethod
    def load(cls, model_dir: str | Path, settings: Settings) -> VlmInputs:
        """The folder's processor and its generation config's end and padding tokens."""
        from transformers import AutoProcessor, GenerationConfig

        processor = AutoProcessor.from_pretrained(str(model_dir))
        try:
            gen = GenerationConfig.from_pretrained(str(model_dir))
            eos, pad, penalty = gen.eos_token_id, gen.pad_token_id, gen.repetition_penalty
        except OSError:  # no generation_config.json: the tokenizer's own
            eos, pad, penalty = None, None, None
        tokenizer = processor.tokenizer
        eos = eos if eos is not None else tokenizer.eos_token_id
        eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos])
        pad = pad if pad is not None else tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
        return cls(processor, settings, eos_ids, int(pad), float(penalty or 1.0))

    # ------------------------------------------------------------------------------------- token limits

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

    # ------------------------------------------------------------------------------------------ prepare

    def prepare(self, conversation: Conversation) -> Prepared:
        """One conversation prepared, or ItemError: 400 naming what in the input was refused (a special token
        in its text, an image shape the processor refuses, a bad video, ...), 500 for anything unexpected."""
        import av

        try:
            bounded = self.bounded(conversation)
            self.check_text(bounded)
            check_shapes(bounded)
            return self.prepared(bounded)
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
        if self._added_tokens is None:
            decoder = self.tokenizer.added_tokens_decoder
            self._added_tokens = sorted({str(token) for token in decoder.values() if str(token)})
        return self._added_tokens

    def prepared(self, conversation: Conversation) -> Prepared:
        """A bounded conversation through the chat template, qwen-vl-utils' resizing and the processor."""
        from qwen_vl_utils import process_vision_info

        text = self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        patch = int(getattr(self.processor.image_processor, "patch_size", 14))
        images, videos, _ = process_vision_info(
            [conversation], return_video_kwargs=True, return_video_metadata=True, image_patch_size=patch
        )
        features = self.features([text], images or [], videos or [])
        return Prepared(text=text, images=list(images or []), videos=list(videos or []), features=features)

    def features(self, texts: list[str], images: list[Image.Image], videos: list[Any]) -> Any:
        """The processor's left-padded batch (on the CPU) for templated texts and their resized vision inputs."""
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
            videos_kwargs["do_sample_frames"] = False  # frames were sampled already
            if hasattr(self.processor.video_processor, "cap_pixels_per_frame"):
                videos_kwargs["cap_pixels_per_frame"] = True  # qwen-vl-utils' per-frame budget, applied already
            kwargs["videos_kwargs"] = videos_kwargs
        if images:
            kwargs["images_kwargs"] = images_kwargs
        with self._lock:
            inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt", **kwargs)
        inputs.pop("video_metadata", None)
        return inputs

    def collate(self, items: Sequence[Prepared]) -> Any:
        """One left-padded batch from prepared items: what the processor makes of the items together (token
        rows padded on the left as the tokenizer pads, vision tensors concatenated in item order)."""
        import torch
        from transformers import BatchFeature

        if len(items) == 1:
            return items[0].features
        features = [item.features for item in items]
        width = max(int(item["input_ids"].shape[1]) for item in features)
        keys = list(dict.fromkeys(key for item in features for key in item))
        data: dict[str, Any] = {}
        for key in keys:
            values = [item[key] for item in features if key in item]
            if key in SEQUENCE_KEYS:
                pad = self.tokenizer.pad_token_id if key == "input_ids" else 0
                values = [torch.nn.functional.pad(v, (width - v.shape[1], 0), value=pad) for v in values]
            data[key] = torch.cat(values) if isinstance(values[0], torch.Tensor) else sum(values, [])
        return BatchFeature(data=data)

    # ------------------------------------------------------------------------------------------ outputs

    def finish(self, tokens: list[int], limit: int) -> tuple[list[int], int, Literal["stop", "length"]]:
        """Cut generated ids at the first end-of-sequence token: (kept ids, completion tokens, finish reason)."""
        for index, token in enumerate(tokens[:limit]):
            if token in self.eos_token_ids:
                return tokens[:index], index + 1, "stop"
        kept = tokens[:limit]
        return kept, len(kept), "length"

    def decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def generation(self, tokens: list[int], limit: int, prompt_tokens: int) -> Generation:
        """A row's generated ids (end token included or not) as its answer and usage."""
        kept, count, reason = self.finish(tokens, limit)
        return Generation(text=self.decode(kept), prompt_tokens=prompt_tokens, completion_tokens=count,
                          finish_reason=reason)

    # --------------------------------------------------------------------------------- pixel budgets

    def pixel_bounds(self, kind: Literal["image", "video"]) -> tuple[int, int]:
        """(min_pixels, max_pixels) per image or video frame: VQA_MIN_PIXELS, else the processor's own;
        the processor's own maximum capped at VQA_MAX_PIXELS (never raised past what the model allows)."""
        proc = self.processor.image_processor if kind == "image" else self.processor.video_processor
        size = proc.size
        low = self.min_pixels or size_value(size, "shortest_edge") or 56 * 56
        own = size_value(size, "longest_edge") or 28 * 28 * 1280
        high = min(own, self.max_pixels) if self.max_pixels else own
        return min(low, high), high

    def bounded(self, conversation: Conversation) -> Conversation:
        """Copy a conversation, giving each image/video part its pixel bounds and decoding video files."""
        out = []
        for message in conversation:
            content = message.get("content")
            if not isinstance(content, list):
                out.append(dict(message))
                continue
            parts = []
            for part in content:
                part = dict(part)
                if "image" in part or "image_url" in part or part.get("type") in ("image", "image_url"):
                    part = self.bounded_image(part)
                elif "video" in part or part.get("type") == "video":
                    part = self.bounded_video(part)
                parts.append(part)
            out.append({**message, "content": parts})
        return out

    def bounded_image(self, part: dict[str, Any]) -> dict[str, Any]:
        image = part.pop("image_url", None) if "image" not in part else part["image"]
        if not isinstance(image, Image.Image):
            # URLs, data URLs and paths are the caller's to fetch and decode (qwen-vl-utils would fetch any URL).
            raise TypeError(f"an image part needs a PIL image, got {type(image).__name__}")
        low, high = self.pixel_bounds("image")
        part.update(type="image", image=image, min_pixels=low, max_pixels=high)
        return part

    def bounded_video(self, part: dict[str, Any]) -> dict[str, Any]:
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


def size_value(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None
