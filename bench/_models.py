"""Random models from config for the benchmarks: the production loading code, real shapes, no hub."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]


def build_clip(folder: Path, projection_dim: int = 512, text_layers: int = 2, text_width: int = 64) -> Path:
    """A random ChineseCLIP with the tiny test model's vision tower and tokenizer, `projection_dim`-d
    vectors (512 = Chinese-CLIP ViT-B/16) and a text tower of `text_layers` x `text_width` (the real
    one is 12 x 768). Built once per folder (a `done` marker), so several benches share it."""
    if (folder / "done").exists():
        return folder
    import torch
    from fixtures.make_tiny_clip import build_processor, save, tiny_config
    from transformers import ChineseCLIPModel

    torch.manual_seed(0)
    processor = build_processor()
    config = tiny_config(len(processor.tokenizer), projection_dim=projection_dim)
    text: Any = config.text_config
    text.hidden_size, text.num_hidden_layers = text_width, text_layers
    text.num_attention_heads, text.intermediate_size = max(2, text_width // 64), 4 * text_width
    save(ChineseCLIPModel(config).eval(), processor, folder)
    (folder / "done").write_text("ok\n")
    return folder


# Qwen/Qwen2.5-VL-3B-Instruct's image processor bounds (its preprocessor_config.json: min_pixels 3136,
# max_pixels 12845056); the tiny test processor allows 112 x 112 at most.
REAL_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}


def with_real_bounds(folder: Path) -> None:
    """Give the saved processor the real model's pixel bounds (the tiny one's are 112x112 at most)."""
    path = folder / "processor_config.json"
    config = json.loads(path.read_text())
    for key in ("image_processor", "video_processor"):
        if key in config:
            config[key]["size"] = dict(REAL_SIZE)
    if "size" in config:
        config["size"] = dict(REAL_SIZE)
    path.write_text(json.dumps(config, indent=2))


def build_qwen(folder: Path, hidden: int = 512, layers: int = 8) -> Path:
    """A random Qwen2.5-VL with the tiny test model's tokenizer, processor and vision tower, and a
    `layers` x `hidden` language model (~30 M parameters at 8 x 512: the real 3B is 36 x 2048), so
    that generate() costs what batching can save. Built once per folder."""
    if (folder / "done").exists():
        return folder
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tiny = ROOT / "tests" / "fixtures" / "tiny_qwen"
    torch.manual_seed(0)
    config: Any = Qwen2_5_VLConfig.from_pretrained(tiny)
    text = config.text_config
    heads = hidden // 64
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = hidden, 4 * hidden, layers
    text.num_attention_heads, text.num_key_value_heads = heads, max(1, heads // 4)
    text.layer_types = ["full_attention"] * layers
    text.rope_parameters = {**text.rope_parameters, "mrope_section": [8, 12, 12]}  # head_dim 64 / 2
    config.vision_config.out_hidden_size = hidden
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny).generation_config
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(tiny).save_pretrained(folder)
    (folder / "done").write_text("ok\n")
    return folder


# Chinese-CLIP ViT-B/16 (OFA-Sys/chinese-clip-vit-base-patch16, its published config.json): a 12 x 768 ViT at
# 224 px with 16 px patches and a 12 x 768 Chinese RoBERTa-wwm text tower, 512-d vectors.
CHINESE_CLIP_VIT_B16: dict[str, Any] = {
    "projection_dim": 512,
    "text_config": {"vocab_size": 21128, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
                    "hidden_act": "gelu", "pad_token_id": 0},
    "vision_config": {"image_size": 224, "patch_size": 16, "hidden_size": 768, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "intermediate_size": 3072, "projection_dim": 512,
                      "hidden_act": "quick_gelu"},
}


def build_real_clip(folder: Path) -> Path:
    """Chinese-CLIP ViT-B/16 at real size with random weights (speed does not depend on their values), with
    the tiny test model's tokenizer (its ids are a subset of the real vocabulary) and image processor set to
    224 px. Built once per folder (a `done` marker)."""
    if (folder / "done").exists():
        return folder
    import torch
    from fixtures.make_tiny_clip import build_processor, save
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    torch.manual_seed(0)
    processor = build_processor()
    image = processor.image_processor
    image.size, image.crop_size = {"shortest_edge": 224}, {"height": 224, "width": 224}
    config = ChineseCLIPConfig(**CHINESE_CLIP_VIT_B16)
    save(ChineseCLIPModel(config).eval(), processor, folder)
    (folder / "done").write_text("ok\n")
    return folder


# Qwen/Qwen2.5-VL-3B-Instruct (https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct/blob/main/config.json): the
# language model's values and the vision tower's hidden_size / out_hidden_size / patch size are in that file; the
# rest of the vision tower (depth, MLP width, heads, window, full-attention blocks) is not, so the checkpoint loads
# with transformers' Qwen2_5_VLVisionConfig defaults, written out here (the same 32 x 1280 tower the 7B uses).
QWEN25_VL_3B: dict[str, Any] = {
    "tie_word_embeddings": True,
    "text_config": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                    "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
                    "max_position_embeddings": 128000, "max_window_layers": 70, "rms_norm_eps": 1e-6,
                    "hidden_act": "silu", "tie_word_embeddings": True, "use_sliding_window": False,
                    "sliding_window": 32768},
    "rope": {"rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"},
}


def real_qwen_config(layers: int | None = None) -> Any:
    """The Qwen2.5-VL-3B architecture with the tiny test tokenizer's special-token ids (so the tiny processor's
    image placeholders are the ones the model looks for; every tiny id is inside the real vocabulary).
    `layers` shrinks the language model and the vision tower to that many blocks (a CPU smoke run)."""
    from transformers import Qwen2_5_VLConfig

    config: Any = Qwen2_5_VLConfig.from_pretrained(ROOT / "tests" / "fixtures" / "tiny_qwen")
    real = QWEN25_VL_3B
    config.tie_word_embeddings = real["tie_word_embeddings"]
    text, vision = config.text_config, config.vision_config
    for key, value in real["text_config"].items():
        setattr(text, key, value)
    text.rope_parameters = {**text.rope_parameters, **real["rope"]}
    for key, value in real["vision_config"].items():
        setattr(vision, key, list(value) if isinstance(value, list) else value)
    if layers is not None:
        text.num_hidden_layers = vision.depth = layers
        # The real tower alternates 7 windowed blocks with 1 full-attention block; a shrunk one keeps that
        # rhythm and always ends on a full-attention block.
        vision.fullatt_block_indexes = [i for i in range(7, layers, 8)] or [layers - 1]
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    return config


def build_real_qwen(folder: Path, layers: int | None = None, device: str = "cpu", save_bf16: bool = False) -> Path:
    """Qwen2.5-VL-3B at real size with random weights (speed does not depend on their values): built on
    `device` (bf16 on CUDA, ~7.5 GB saved; fp32 on the CPU), the tiny test tokenizer and chat template, and the
    tiny processor with the real model's pixel bounds. Built once per folder (a `done` marker)."""
    if (folder / "done").exists():
        return folder
    import torch
    from transformers import AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    tiny = ROOT / "tests" / "fixtures" / "tiny_qwen"
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):  # initialised where it runs: 3.75 B parameters on a CPU take minutes
        model: Any = Qwen2_5_VLForConditionalGeneration._from_config(real_qwen_config(layers), dtype=dtype)
    model.generation_config = GenerationConfig.from_pretrained(tiny)
    if save_bf16:  # what checkpoints ship (Qwen's are bf16): half the disk, and what the exporter reads
        model = model.to(torch.bfloat16)
    model.eval().save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    AutoProcessor.from_pretrained(tiny).save_pretrained(folder)
    with_real_bounds(folder)
    (folder / "done").write_text("ok\n")
    return folder
