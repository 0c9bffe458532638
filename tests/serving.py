"""Run the real `bentoml serve` in a subprocess on a free port (used by tests and bench/)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        # Each server its own short TMPDIR: BentoML puts the runners' Unix sockets there (at most 107
        # bytes a path) and each request's uploads; it is removed when the server stops.
        self.env = {**env, "TMPDIR": tempfile.mkdtemp(prefix="mms-")}
        self.readyz_seen: list[int] = []  # /readyz statuses seen while starting
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", ".", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                status = httpx.get(f"{self.url}/readyz", timeout=2).status_code
                self.readyz_seen.append(status)
                if status == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        if "TMPDIR" in self.env:
            shutil.rmtree(self.env["TMPDIR"], ignore_errors=True)


def runner_pid(server: Server, name: str) -> int:
    """The pid of the BentoML runner process `name` (e.g. "clip_runner") that `server` started."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        flag = b"--service-name"
        if proc.name.isdigit() and flag in args and args[args.index(flag) + 1] == name.encode() \
                and parent_pid(proc) == server.proc.pid:
            return int(proc.name)
    raise LookupError(name)


def parent_pid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


TINY_QWEN = ROOT / "tests" / "fixtures" / "tiny_qwen"


def service_env(tmp: Path, model: Path, library: Path, vqa_model: Path = TINY_QWEN) -> dict[str, str]:
    prefixes = ("QDRANT_", "CLIP_", "IMAGE_", "BENTOML_", "VQA_", "API_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(CLIP_MODEL=str(model), VQA_MODEL=str(vqa_model), IMAGE_LIBRARY=str(library),
               QDRANT_PATH=str(tmp / "qdrant"), BENTOML_HOME=str(tmp / "bentoml"), DEVICE="cpu",
               CLIP_RUNTIME_CACHE=str(tmp / "clip-backends"))  # the default CLIP_RUNTIME=auto exports there
    return env


@contextlib.contextmanager
def running(env: dict[str, str], log: Path) -> Iterator[Server]:
    """A started, ready service; stopped on leaving."""
    server = Server(env, log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def run_indexer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "indexer", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
