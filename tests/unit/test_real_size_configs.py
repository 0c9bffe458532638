"""The real-size benchmark models (bench/_models.py) have the published architectures: built on the meta
device (no memory), their parameter counts equal the published model sizes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _models import CHINESE_CLIP_VIT_B16, real_qwen_config  # noqa: E402

TINY_QWEN = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_qwen"


def test_qwen_3b_has_the_published_size_and_shapes() -> None:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = real_qwen_config()
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    # Qwen/Qwen2.5-VL-3B-Instruct's model card: 3.75 B parameters (the tied embedding counted once).
    assert sum(p.numel() for p in model.parameters()) == 3_754_622_976
    assert model.lm_head.weight is model.get_input_embeddings().weight
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (2048, 11008, 36)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (16, 2, 151936)
    assert text.rope_parameters["rope_theta"] == 1e6 and text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.depth, vision.hidden_size, vision.intermediate_size, vision.num_heads) == (32, 1280, 3420, 16)
    assert (vision.out_hidden_size, vision.patch_size, vision.spatial_merge_size) == (2048, 14, 2)
    assert (vision.window_size, list(vision.fullatt_block_indexes)) == (112, [7, 15, 23, 31])


def test_qwen_3b_uses_the_test_tokenizer_ids() -> None:
    from transformers import AutoTokenizer

    config = real_qwen_config()
    tokenizer = AutoTokenizer.from_pretrained(TINY_QWEN)
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert len(tokenizer) <= config.text_config.vocab_size


@pytest.mark.parametrize(("layers", "full_attention"), [(2, [1]), (10, [7]), (16, [7, 15])])
def test_a_shrunk_qwen_keeps_the_real_widths(layers: int, full_attention: list[int]) -> None:
    config = real_qwen_config(layers)
    assert config.text_config.num_hidden_layers == config.vision_config.depth == layers
    assert len(config.text_config.layer_types) == layers
    assert config.vision_config.fullatt_block_indexes == full_attention
    assert (config.text_config.hidden_size, config.vision_config.hidden_size) == (2048, 1280)


def test_chinese_clip_b16_has_the_published_size() -> None:
    import torch
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    with torch.device("meta"):
        model = ChineseCLIPModel(ChineseCLIPConfig(**CHINESE_CLIP_VIT_B16))
    # OFA-Sys/chinese-clip-vit-base-patch16's model card: 188 M parameters.
    assert sum(p.numel() for p in model.parameters()) == 188_262_913
