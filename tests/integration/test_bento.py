"""`bentoml build` of bentofile.yaml, then `bentoml serve <tag>` of the built Bento answering /health."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from serving import ROOT, Server, free_port, run_indexer, service_env
from shapes import make_library

COPY_IGNORE = shutil.ignore_patterns(".venv", ".venv-*", ".git", "__pycache__", "*_cache", "data", "test-artifacts",
                                     "images")


class BentoServer(Server):
    """Server, but `bentoml serve <tag>` of a built Bento, from a folder outside the repository."""

    def __init__(self, tag: str, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**env, "TMPDIR": tempfile.mkdtemp(prefix="mms-")}
        self.readyz_seen = []
        self.images = 0  # the library size, once indexed
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> tuple[str, Path, dict[str, str]]:
    """Build from a copy of the repository that also holds a UI file and folders the Bento must leave out."""
    tmp = tmp_path_factory.mktemp("bento")
    context = tmp / "repo"
    shutil.copytree(ROOT, context, ignore=COPY_IGNORE)
    (context / "ui").mkdir(exist_ok=True)
    (context / "ui" / "index.html").write_text("<!doctype html><title>search</title>")
    for folder in ("data", "test-artifacts"):
        (context / folder).mkdir()
        (context / folder / "junk.txt").write_text("not for the bento")
    env = service_env(tmp, tiny_clip_dir, tmp / "photos")
    done = subprocess.run([sys.executable, "-m", "bentoml", "build", str(context), "-o", "tag"], cwd=context,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    tag = done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    return tag, Path(env["BENTOML_HOME"]) / "bentos" / name / version, env


def test_bento_holds_the_service_and_not_the_tests(built: tuple[str, Path, dict[str, str]]) -> None:
    tag, bento, _ = built
    assert tag.startswith("multimodal_server:")
    src = bento / "src"
    files = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    for module in ("service.py", "config.py", "README.md", "docs/api.md", "ui/index.html", "api/http/limits.py",
                   "api/http/metrics.py", "api/http/logs.py", "core/images.py", "core/telemetry.py",
                   "core/bentoml_compat.py", "core/files.py",
                   "runners/clip/encoder.py", "runners/clip/service.py", "runners/vlm/service.py",
                   "indexer/__main__.py",
                   "store/qdrant_edge.py"):
        assert module in files
    assert not [f for f in files if f.startswith(("tests/", "data/", "test-artifacts/", "bench/", ".venv/"))]
    assert not [f for f in files if "__pycache__" in f]
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==1.4.40" in requirements and "torch==2.14.1" in requirements
    docker = yaml.safe_load((bento / "bento.yaml").read_text())["docker"]
    assert docker["distro"] == "debian" and docker["cuda_version"] == "12.8.1"
    assert docker["python_version"] == "3.11"
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04" in dockerfile


@pytest.fixture(scope="module")
def bento_server(built: tuple[str, Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[BentoServer]:
    tag, _, env = built
    images = len(make_library(env["IMAGE_LIBRARY"], n_per_class=1, seed=5))
    done = run_indexer(env)
    assert done.returncode == 0, done.stderr
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # not the repository: the Bento's own files are served
    server = BentoServer(tag, env, elsewhere / "server.log", elsewhere)
    server.images = images
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_served_bento_answers_health(bento_server: BentoServer, built: tuple[str, Path, dict[str, str]]) -> None:
    tag = built[0]
    response = httpx.get(f"{bento_server.url}/health", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["clip_model_loaded"] and body["vqa_model_loaded"]
    assert body["image_library_size"] == bento_server.images > 0
    assert {"device", "clip_model", "index_model", "vqa_model", "vqa_batches"} <= set(body)
    assert f'BentoServer from "{tag}"' in bento_server.log.read_text()  # the Bento, not the repository
