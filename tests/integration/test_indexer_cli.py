"""`python -m indexer` run as users run it, in a subprocess: its summary, exit codes and the model check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers.indexing import cli, cli_env, corrupt_files, edge_contents
from shapes import make_library


def test_cli_summary_exit_codes_and_model_mismatch(random_clip_dir: Path, tiny_clip_dir: Path,
                                                   tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=1)
    corrupt_files(library)
    env = cli_env(random_clip_dir, library, tmp_path / "qdrant")
    done = cli(env, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["added"] == len(shapes) and summary["failed"] == 3 and len(summary["failures"]) == 3

    text = cli(env)
    assert text.returncode == 0 and f"unchanged {len(shapes)}" in text.stdout
    assert "failed: broken/empty.png: empty file" in text.stdout

    other = cli_env(tiny_clip_dir, library, tmp_path / "qdrant")
    refused = cli(other)
    assert refused.returncode == 2
    assert "--recreate" in refused.stderr and str(random_clip_dir.resolve()) in refused.stderr
    assert cli(other, "--recreate").returncode == 0
    stored = edge_contents(tmp_path / "qdrant")
    assert {p["model_id"] for p in stored.values()} == {str(tiny_clip_dir.resolve())}

    missing = cli(cli_env(random_clip_dir, tmp_path / "nowhere", tmp_path / "qdrant"))
    assert missing.returncode == 2 and "IMAGE_LIBRARY" in missing.stderr


def test_a_run_with_nothing_to_embed_does_not_load_the_model(random_clip_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(random_clip_dir, model)
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=1)
    env = cli_env(model, library, tmp_path / "qdrant")
    assert cli(env).returncode == 0
    (model / "model.safetensors").unlink()  # any attempt to load the model would now fail
    again = cli(env, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["unchanged"] == len(shapes)


def test_a_bad_setting_is_one_line_naming_it_and_exit_2(random_clip_dir: Path, tmp_path: Path) -> None:
    """docs/indexing.md: 2 is bad settings. A job runner reads 1 as a store error, and a traceback is no
    message for the person who set it."""
    env = cli_env(random_clip_dir, tmp_path / "lib", tmp_path / "qdrant")
    done = cli({**env, "INDEX_BATCH_SIZE": "0"}, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: INDEX_BATCH_SIZE: Input should be greater than or equal to 1 (docs/settings.md)"]
    assert not (tmp_path / "qdrant").exists()  # refused before anything was opened
