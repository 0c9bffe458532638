"""Random models from config for the benchmarks: the production loading code, real shapes, no hub."""

from __future__ import annotations

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
