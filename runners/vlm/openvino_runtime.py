"""The OpenVINO runtime for Qwen2.5-VL on a CPU (VQA_RUNTIME=openvino): OpenVINO GenAI's continuous batching.

It runs an export made by runners/vlm/export.py (int8 or int4 weights). Each prepared item (runners/vlm_inputs:
the chat-templated prompt with Qwen's own vision placeholders, images already resized to the processor's size) is
one request of a `ContinuousBatchingPipeline`; the pipeline is stepped until every request ends, so a batch of
concurrent questions shares each forward pass, and a request whose deadline passes (or that is cancelled) is
stopped on its own at the next step. Heavy imports (openvino, openvino_genai, numpy) happen inside functions.

No follow-up cache here (docs/cpu.md 'Follow-up questions'; what PyTorch does in runners/vlm/torch_reuse.py), as
read in OpenVINO GenAI 2026.4's source:
- a vision encoding cannot be given back: `add_request(id, prompt, images, ...)` runs the vision encoder on every
  request (continuous_batching/pipeline_base.cpp). The one request that takes embeddings, `add_request(id,
  tensor, ...)`, takes Qwen's 3D rotary positions from the embedder's state, i.e. the last prompt it prepared
  (qwen2vl/classes.cpp get_position_ids), not from the embeddings given: wrong for any other photo or prompt.
- `SchedulerConfig.enable_prefix_caching` stays off: a block of a prompt with images is found by a hash of its
  embeddings (sequence_group.cpp _make_hash) that reads 10 values (stride 50) of each token's 2048 (3B) and leaves
  out the 3D rotary positions, so it is not a key on the image: what tells two photos apart is float rounding in
  those sampled values. A plain colour at two aspect ratios (8x4 and 4x8 patches: the same token count, other
  positions) embeds to within 5e-7 of itself (measured on the tiny model in PyTorch); where the sampled values
  round alike, blocks made at the other positions are reused, and such a hit cannot be told from a right one.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from config import Settings
from runners.vlm.inputs import Prepared, VlmInputs
from runners.vlm.runtime import Row, Sampling

log = logging.getLogger(__name__)

# KV cache GenAI allocates for all requests in flight (Qwen2.5-VL-3B: 36 KiB a token in f16, so 1 GiB holds
# ~29k tokens: 8 concurrent 1-MP questions with 512-token answers fit twice over).
KV_CACHE_GIB = 1


class OpenVinoRuntime:
    """An exported Qwen2.5-VL on OpenVINO GenAI. Calls are serialised by a lock (one thread steps the pipeline)."""

    name = "openvino"
    device = "cpu"
    video = False  # GenAI's Qwen2.5-VL video path samples and resizes frames its own way: not checked here

    def __init__(self, pipeline: Any, inputs: VlmInputs, weights: str, compute: str) -> None:
        self.pipeline = pipeline
        self.inputs = inputs
        self.precision = weights
        self.compute = compute
        self._lock = threading.Lock()
        self._ids = itertools.count()

    @classmethod
    def load(cls, export_dir: Path, inputs: VlmInputs, settings: Settings, weights: str) -> OpenVinoRuntime:
        import openvino_genai

        scheduler = openvino_genai.SchedulerConfig()
        scheduler.cache_size = KV_CACHE_GIB
        scheduler.enable_prefix_caching = False  # its block hash is not a key on the image (see above)
        compute = cpu_precision(settings.vqa_openvino_precision)
        # Pinned: the CPU plugin would pick bf16 by itself on AMX / AVX-512-BF16 CPUs.
        properties = {"INFERENCE_PRECISION_HINT": compute}
        pipeline = openvino_genai.ContinuousBatchingPipeline(str(export_dir), scheduler, "CPU", properties)
        return cls(pipeline, inputs, weights, compute)

    def caches(self) -> dict[str, dict[str, int]]:
        return {}  # nothing is reused across requests here (see above)

    def run_batch(self, items: Sequence[Prepared], limits: Sequence[int], deadlines: Sequence[float | None],
                  sampling: Sampling) -> list[Row]:
        with self._lock:
            handles = [self.add(item, limit, sampling) for item, limit in zip(items, limits, strict=True)]
            tokens: list[list[int]] = [[] for _ in handles]
            cut: dict[int, int] = {}
            try:
                while self.pipeline.has_non_finished_requests():
                    self.pipeline.step()
                    now = time.time()
                    for row, handle in enumerate(handles):
                        tokens[row] += new_tokens(handle)
                        deadline = deadlines[row]
                        if row not in cut and deadline is not None and now > deadline and running(handle):
                            cut[row] = len(tokens[row])
                            handle.stop()
            finally:
                self.drain(handles)
            for row, handle in enumerate(handles):
                tokens[row] += new_tokens(handle)
        return [Row(tokens=row_tokens[:limit], cut_at=cut.get(row))
                for row, (row_tokens, limit) in enumerate(zip(tokens, limits, strict=True))]

    def stream(self, item: Prepared, limit: int, sampling: Sampling, deadline: float | None,
               cancelled: threading.Event) -> Iterator[list[int]]:
        with self._lock:
            handle = self.add(item, limit, sampling)
            try:
                while self.pipeline.has_non_finished_requests():
                    if cancelled.is_set() or (deadline is not None and time.time() > deadline):
                        handle.stop()
                    self.pipeline.step()
                    new = new_tokens(handle)
                    if new:
                        yield new
            finally:
                self.drain([handle])

    def add(self, item: Prepared, limit: int, sampling: Sampling) -> Any:
        import numpy as np
        import openvino as ov

        images = [ov.Tensor(np.ascontiguousarray(np.asarray(image.convert("RGB")))[None]) for image in item.images]
        return self.pipeline.add_request(next(self._ids), item.text, images, self.config(limit, sampling))

    def config(self, limit: int, sampling: Sampling) -> Any:
        import openvino_genai

        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = limit
        config.apply_chat_template = False  # the prompt is templated already (runners/vlm_inputs)
        config.stop_token_ids = set(self.inputs.eos_token_ids)
        config.repetition_penalty = self.inputs.repetition_penalty
        if sampling.temperature > 0:
            config.do_sample = True
            config.temperature = float(sampling.temperature)
            config.top_p = 1.0 if sampling.top_p is None else float(sampling.top_p)
            config.rng_seed = random.getrandbits(31)
        else:
            config.do_sample = False
        return config

    def drain(self, handles: Sequence[Any]) -> None:
        """Stop what is still running and step until the pipeline holds no request (frees its KV blocks)."""
        for handle in handles:
            if running(handle):
                handle.stop()
        while self.pipeline.has_non_finished_requests():
            self.pipeline.step()


def cpu_precision(asked: str) -> str:
    """`asked` when the CPU computes it natively, else f32 (bf16 needs AMX or AVX-512 BF16), with a warning."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if asked == "bf16" and "BF16" not in capabilities:
        log.warning("VQA_OPENVINO_PRECISION=bf16 but this CPU has no native bf16 (%s): computing in f32",
                    ", ".join(capabilities))
        return "f32"
    return asked


def running(handle: Any) -> bool:
    import openvino_genai

    return bool(handle.get_status() == openvino_genai.GenerationStatus.RUNNING)


def new_tokens(handle: Any) -> list[int]:
    """The token ids a request generated since the last read (greedy and sampling have one sequence)."""
    if not handle.can_read():
        return []
    outputs = handle.read()
    return [int(token) for output in outputs.values() for token in output.generated_ids]
