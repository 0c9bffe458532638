"""Find a model's files: local folder -> the source's cache -> download.

Used by every runner and by the indexer, so users and tests run the same code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# The transformers-format copies of a model on ModelScope, where its id differs from Hugging Face's.
MODELSCOPE_ALIASES = {
    "OFA-Sys/chinese-clip-vit-base-patch16": "AI-ModelScope/chinese-clip-vit-base-patch16",
}


class ModelNotFoundError(RuntimeError):
    """The model is neither a local folder, nor cached, nor downloadable."""


def resolve_model(model: str, source: str, cache_dir: Path | None, setting: str) -> Path:
    """Return a folder holding `model`'s files (config.json and weights).

    `setting` names the environment variable the user set (for error messages).
    """
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{setting}={model} is a folder without config.json")
        return local.resolve()
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelNotFoundError(f"{setting}={model}: no such folder")
    cached = find_cached(model, source, cache_dir)
    if cached is not None:
        log.info("model %s found in the %s cache at %s", model, source, cached)
        return cached
    return download(model, source, cache_dir, setting)


def modelscope_id(model: str) -> str:
    return MODELSCOPE_ALIASES.get(model, model)


def modelscope_cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MODELSCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modelscope" / "hub"


def modelscope_candidates(model: str, cache_dir: Path | None) -> list[Path]:
    root = modelscope_cache_root(cache_dir)
    names = {modelscope_id(model), model}
    found = []
    for name in names:
        # ModelScope stores "Qwen2.5" as "Qwen2___5"; older releases used "org---name".
        for variant in {name, name.replace(".", "___")}:
            found += [root / "models" / variant, root / variant, root / variant.replace("/", "---")]
    return found


def find_cached(model: str, source: str, cache_dir: Path | None) -> Path | None:
    if source == "modelscope":
        for path in modelscope_candidates(model, cache_dir):
            if (path / "config.json").is_file():
                return path
        return None
    return find_hf_cached(model, cache_dir)


def find_hf_cached(model: str, cache_dir: Path | None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(model, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss means "not cached"
        return None
    return path if (path / "config.json").is_file() else None


def download(model: str, source: str, cache_dir: Path | None, setting: str) -> Path:
    log.info("downloading %s from %s", model, source)
    try:
        if source == "modelscope":
            from modelscope import snapshot_download as ms_download

            cache = str(cache_dir) if cache_dir is not None else None
            return Path(ms_download(modelscope_id(model), cache_dir=cache))
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, cache_dir=cache_dir))
    except Exception as exc:  # noqa: BLE001 - re-raised with the way out
        other = "huggingface" if source == "modelscope" else "modelscope"
        raise ModelNotFoundError(
            f"could not download model {model!r} from {source} ({type(exc).__name__}: {exc}). "
            f"Set {setting} to a local folder with the model's files, "
            f"or MODEL_CACHE_DIR to a cache that holds it, or try MODEL_SOURCE={other}."
        ) from exc
