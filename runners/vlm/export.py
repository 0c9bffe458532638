"""`python -m runners.vlm.export [--weights int8|int4]`: make the OpenVINO export of VQA_MODEL ahead of time
(runners/vlm/openvino_export.py), with PyTorch fp32's probe answers beside it, so the service starts on it."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from config import load_settings_or_exit
from runners.export_cache import MARKER
from runners.hub import resolve_model
from runners.vlm.loader import torch_reference
from runners.vlm.openvino_export import ExportFailed, export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.vlm.export", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", choices=("int8", "int4"),
                        help="default: VQA_OPENVINO_WEIGHTS (auto: the export that exists, else int8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = load_settings_or_exit()
    if args.weights:
        settings = settings.model_copy(update={"vqa_openvino_weights": args.weights})
    model_dir = resolve_model(settings.vqa_model, settings.model_source, settings.model_cache_dir, "VQA_MODEL")
    try:
        folder = export(settings, settings.vqa_model, model_dir, lambda: torch_reference(settings, model_dir))
    except ExportFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    print(json.dumps({"folder": str(folder), **meta}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
