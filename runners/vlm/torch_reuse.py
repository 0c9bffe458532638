"""Follow-up questions on PyTorch: a photo's vision encoding and its prompt prefix's attention cache, reused.

Transformers' Qwen2.5-VL `generate` takes pre-encoded images (`mm_encoder_outputs`, the documented way to skip its
vision tower) and continues from a filled attention cache (`cache`), prefilling only the tokens after it. So:

- each image of a batch is encoded alone through the model's own `get_image_features` and kept in the `vision`
  LRU, keyed by its resized, normalised pixels (what the vision tower reads), its patch grid, the model and the
  precision: two photos of the same size differ in their pixels, the same photo at two pixel budgets in its grid;
- a question asked alone (a batch of one, images and no video) is prefilled in two parts: the prompt up to its last
  image's end (system prompt, earlier turns, the images) and the rest. The first part's attention cache is kept
  in the `prefix` LRU, keyed by its token ids and its images' keys (the image placeholder tokens are the same for
  every image of a size: the pixels' keys are what tell photos apart), with the 3D rotary offset Qwen computes from
  the image grids. A follow-up prefills only its own words, and reads no vision encoding at all.

inputs.item_messages puts images before the question, so every question about a photo shares that prefix.
Heavy imports (torch, transformers) happen inside functions only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from config import Settings
from runners.vlm.reuse import MIB, ByteLRU, content_key


@dataclass
class Prefix:
    """A prompt prefix's attention cache and the rotary offset of the tokens after it (Qwen's rope_deltas)."""

    cache: Any
    rope_deltas: Any
    size: int


class TorchReuse:
    """The two caches of one PyTorch model (bounded by VQA_VISION_CACHE_MB and VQA_PREFIX_CACHE_MB)."""

    def __init__(self, settings: Settings, model_key: str) -> None:
        self.model_key = model_key  # model id, runtime, precision: an entry is only ever this model's
        self.vision = ByteLRU("vision", settings.vqa_vision_cache_mb * MIB)
        self.prefixes = ByteLRU("prefix", settings.vqa_prefix_cache_mb * MIB)

    def info(self) -> dict[str, dict[str, int]]:
        return {"vision": self.vision.info(), "prefix": self.prefixes.info()}

    def generate_kwargs(self, model: Any, batch: Any) -> dict[str, Any]:
        """What `model.generate` gets for a collated batch: the batch itself when it has no image or both
        caches are off; else its images as cached encodings, and a batch of one its prefix's cache."""
        kwargs = dict(batch)
        if "pixel_values" not in kwargs or not (self.vision.enabled or self.prefixes.enabled):
            return kwargs
        images = split_images(kwargs.pop("pixel_values"), kwargs["image_grid_thw"])
        keys = [self.image_key(pixels, grid) for pixels, grid in images]
        cache = self.prefix_cache(model, kwargs, images, keys) if self.prefixes.enabled else None
        if cache is not None:
            kwargs["cache"] = cache  # the images are inside it: nothing to encode, not even from the cache
        else:
            kwargs["mm_encoder_outputs"] = {"image": image_outputs(self.encode_images(model, images, keys))}
        return kwargs

    # ------------------------------------------------------------------------------------------ vision

    def image_key(self, pixels: Any, grid: Any) -> str:
        """What the vision tower reads of one image: its resized, normalised patches and their grid."""
        return content_key(self.model_key, "image", grid.tolist(), str(pixels.dtype), tensor_bytes(pixels))

    def encode_images(self, model: Any, images: list[tuple[Any, Any]], keys: list[str]) -> list[Any]:
        """Each image's vision-tower output, from the cache or encoded now (each image alone: its output does
        not depend on the other images of the batch, the tower attends within an image)."""
        encoded = []
        for (pixels, grid), key in zip(images, keys, strict=True):
            output = self.vision.get(key)
            if output is None:
                output = model.get_image_features(pixels, grid[None], return_dict=True).pooler_output[0]
                self.vision.put(key, output, tensor_size(output))
            encoded.append(output)
        return encoded

    # ------------------------------------------------------------------------------------------ prefix

    def prefix_cache(self, model: Any, kwargs: dict[str, Any], images: list[tuple[Any, Any]],
                     keys: list[str]) -> Any | None:
        """A copy of the attention cache of the prompt up to its last image (made now on a miss), with the
        model's rotary offset set for it; None when the batch cannot continue from one (several rows, padding,
        a video, a prompt that ends at its image)."""
        ids = kwargs["input_ids"]
        length = prefix_length(ids, int(model.config.vision_end_token_id))
        mask = kwargs.get("attention_mask")
        usable = (ids.shape[0] == 1 and "pixel_values_videos" not in kwargs and "mm_token_type_ids" in kwargs
                  and (mask is None or bool(mask.all())))
        if not usable or length is None:
            return None
        key = content_key(self.model_key, "prefix", ids[0, :length].tolist(), *keys)
        prefix = self.prefixes.get(key)
        if prefix is None:
            prefix = fill_prefix(model, kwargs, length, self.encode_images(model, images, keys))
            self.prefixes.put(key, prefix, prefix.size)
        # generate() reads the offset from the model when it continues from a cache (a stale one would shift
        # every position after the image).
        model.model.rope_deltas = prefix.rope_deltas
        return copy.deepcopy(prefix.cache)  # generate() appends to the cache it gets: the kept one stays as it is


def fill_prefix(model: Any, kwargs: dict[str, Any], length: int, encoded: list[Any]) -> Prefix:
    """Prefill the first `length` tokens (their images given encoded) into a fresh attention cache."""
    from transformers import DynamicCache

    ids = kwargs["input_ids"][:, :length]
    mask = kwargs.get("attention_mask")
    model(input_ids=ids, attention_mask=None if mask is None else mask[:, :length],
          image_grid_thw=kwargs["image_grid_thw"], mm_token_type_ids=kwargs["mm_token_type_ids"][:, :length],
          mm_encoder_outputs={"image": image_outputs(encoded)}, cache=(cache := DynamicCache(config=model.config)),
          use_cache=True, logits_to_keep=1)
    deltas = model.model.rope_deltas.clone()
    tensors = [getattr(layer, name, None) for layer in cache.layers for name in ("keys", "values")]
    size = sum(tensor_size(t) for t in tensors if t is not None)
    return Prefix(cache=cache, rope_deltas=deltas, size=size)


def split_images(pixels: Any, grids: Any) -> list[tuple[Any, Any]]:
    """A batch's concatenated image patches as (patches, grid) per image, in placeholder order."""
    import torch

    sizes = [int(n) for n in grids.prod(-1).tolist()]
    return list(zip(torch.split(pixels, sizes), grids, strict=True))


def prefix_length(ids: Any, vision_end: int) -> int | None:
    """Tokens up to and including the last image's end, when some prompt tokens follow it."""
    ends = (ids[0] == vision_end).nonzero()
    if not len(ends):
        return None
    length = int(ends[-1]) + 1
    return length if length < ids.shape[1] else None


def image_outputs(encoded: list[Any]) -> Any:
    """Encoded images in the form generate() and forward() take them (`mm_encoder_outputs["image"]`)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    per_image: Any = tuple(encoded)  # one tensor per image, as get_image_features returns them
    return BaseModelOutputWithPooling(pooler_output=per_image)


def tensor_bytes(tensor: Any) -> bytes:
    import torch

    return bytes(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())


def tensor_size(tensor: Any) -> int:
    return int(tensor.numel() * tensor.element_size())
