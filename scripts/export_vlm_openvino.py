"""Export a Qwen2.5-VL folder to OpenVINO IR for OpenVINO GenAI (VQA_RUNTIME=openvino).

Runs in the exporter's own environment (.venv-vlm-export, made by scripts/setup-vlm-export.sh from
requirements-vlm-export.txt): optimum-intel 2.2.0 needs transformers < 5.6 (its Qwen2.5-VL export config wants
4.x) while the service pins 5.24. It imports nothing of the project: runners/vlm/export.py calls it as
    .venv-vlm-export/bin/python scripts/export_vlm_openvino.py SOURCE OUT --weights int8|int4
and does the caching, the fidelity reference and the atomic rename itself.

The two things transformers 4.57 cannot read in a folder saved by transformers 5.x are patched in a private
copy (the source folder is never written):
- config.json keeps RoPE settings in `rope_parameters`; 4.57 reads `rope_scaling` / `rope_theta`;
- tokenizer_config.json lists `extra_special_tokens` as a list; 4.57 wants a dict, so the OpenVINO tokenizer
  is converted from tokenizer.json directly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WEIGHTS = ("int8", "int4", "fp16")
TOKENIZER_FILES = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")


def legacy_rope(config: dict) -> dict:
    """A text/top-level config with transformers 4.x RoPE keys added beside 5.x's `rope_parameters`."""
    params = config.get("rope_parameters")
    if isinstance(params, dict) and "rope_scaling" not in config:
        scaling = {key: value for key, value in params.items() if key != "rope_theta"}
        scaling.setdefault("type", scaling.get("rope_type", "default"))
        config["rope_scaling"] = scaling
        if "rope_theta" in params:
            config.setdefault("rope_theta", params["rope_theta"])
    return config


def patched_copy(source: Path, work: Path) -> Path:
    """A folder of links to `source`'s files with a 4.x-readable config.json."""
    copy = work / "source"
    copy.mkdir()
    for path in source.iterdir():
        if path.is_file() and path.name != "config.json":
            os.symlink(path.resolve(), copy / path.name)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config")
    if isinstance(text, dict):
        legacy_rope(text)
        for key in ("rope_scaling", "rope_theta"):
            if key in text:
                config.setdefault(key, text[key])
    legacy_rope(config)
    (copy / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return copy


def export_models(source: Path, out: Path, weights: str) -> None:
    cli = Path(sys.executable).with_name("optimum-cli")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [str(cli), "export", "openvino", "--model", str(source), "--task", "image-text-to-text",
               "--weight-format", weights, str(out)]
    subprocess.run(command, check=True, env=env)


def write_tokenizers(source: Path, out: Path) -> None:
    """openvino_tokenizer.xml / openvino_detokenizer.xml (GenAI's tokenizer), from tokenizer.json."""
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import PreTrainedTokenizerFast

    settings = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(source / "tokenizer.json"),
                                        eos_token=settings.get("eos_token"), pad_token=settings.get("pad_token"))
    template = source / "chat_template.jinja"
    if template.is_file():
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    encoder, decoder = convert_tokenizer(tokenizer, with_detokenizer=True)
    ov.save_model(encoder, str(out / TOKENIZER_FILES[0]))
    ov.save_model(decoder, str(out / TOKENIZER_FILES[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", choices=WEIGHTS, default="int8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlm-export-") as work:
        source = patched_copy(args.source.resolve(), Path(work))
        export_models(source, args.out, args.weights)
        if not all((args.out / name).is_file() for name in TOKENIZER_FILES):
            write_tokenizers(source, args.out)
    # The service's own files describe the model to GenAI (processor bounds, chat template, generation config).
    for name in ("chat_template.jinja", "generation_config.json"):
        if (args.source / name).is_file():
            shutil.copyfile(args.source / name, args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
