"""One typed settings object, read from environment variables and `.env`.

Every setting is documented in README.md ("Settings"). Import `get_settings()`;
it is cached so every module in a process sees the same values.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CLIP_MODEL = "OFA-Sys/chinese-clip-vit-base-patch16"
DEFAULT_VQA_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
DEFAULT_ASK_INSTRUCTION = (
    "Answer the question from these photos only, which are numbered from 1 in the order shown, and name the "
    "numbers of the photos you used (for example \"photo 2\"); if they do not show the answer, say so. "
    "请只根据这些按顺序从1编号的照片回答问题，并写出所用照片的编号（例如“图2”）；照片里没有答案时请直说。")
# The indexer's describe stage (`python -m indexer --describe`) asks the VQA model this about every photo. An
# answer that parses as this JSON fills the payload fields description / visible_text / tags; any other answer
# is stored whole as description. The tiny test describer (tests/fixtures/make_tiny_describer.py) is trained
# on exactly this prompt.
DEFAULT_DESCRIBE_PROMPT = (
    '用JSON描述这张照片，只输出JSON：{"description": "一句简短的中文描述", '
    '"visible_text": "照片里能看到的文字，没有就留空", "tags": ["几个中文标签"]}')


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Models
    clip_model: str = DEFAULT_CLIP_MODEL
    vqa_model: str = DEFAULT_VQA_MODEL
    model_source: Literal["modelscope", "huggingface"] = "modelscope"
    model_cache_dir: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CLIP encoding backend (runners/clip_backends.py): auto = PyTorch on CUDA; on CPU fp32 OpenVINO (else fp32
    # ONNX Runtime, else PyTorch), each only with identical probe rankings; faster than PyTorch eager fp32 on
    # the CPU measured here (BENCHMARKS.md, "Real size: CLIP"). Low-precision backends are opt-in.
    clip_backend: Literal["auto", "torch", "openvino", "onnx", "openvino-bf16", "torch-bf16", "onnx-int8"] = "auto"
    clip_backend_cache: Path = Path("./data/clip-backends")  # exports, keyed by model id and file hashes
    clip_backend_min_top1: float = Field(default=0.9, ge=0, le=1)  # probe top-1 agreement with PyTorch fp32
    clip_backend_min_cosine: float = Field(default=0.99, ge=-1, le=1)  # lowest probe cosine with PyTorch fp32

    # Image library and vector store
    image_library: Path = Path("./images")
    # The largest library file read into memory (API and indexer alike); a larger one is refused as not a
    # library file (core/library.py), so a huge or endless file cannot exhaust memory.
    library_max_file_mb: float = Field(default=256.0, gt=0)
    qdrant_path: Path = Path("./data/qdrant")
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_collection: str = "images"
    qdrant_shards: int = Field(default=1, ge=1)
    qdrant_replication_factor: int = Field(default=1, ge=1)
    qdrant_quantization: Literal["int8", "none"] = "int8"  # int8 copies searched, float vectors rescore
    qdrant_hnsw_ef: int = Field(default=512, ge=1)  # search beam width: higher = better recall, slower

    # The service's own address, written for the indexer to its address file in QDRANT_PATH (used only
    # when `bentoml serve` does not hand the API worker its listening socket; api/internal_store.py).
    service_url: str = "http://127.0.0.1:3000"

    # Indexer
    index_batch_size: int = Field(default=32, ge=1, le=4096)
    index_workers: int = Field(default=4, ge=1, le=64)
    watch_interval_s: float = Field(default=2.0, gt=0)  # `--watch`: how often the library is listed
    watch_settle_s: float = Field(default=2.0, ge=0)  # `--watch`: a file unchanged this long is indexed
    watch_events: bool = True  # `--watch`: filesystem events wake it early (false: polling only)
    # The describe stage (`--describe`, indexer/describe_stage.py): VQA_MODEL asked DESCRIBE_PROMPT about each photo
    index_describe: bool = False  # true: every run (not --watch) describes what is not described yet
    describe_prompt: str = DEFAULT_DESCRIBE_PROMPT  # changing it re-describes every photo on the next run
    describe_batch_size: int = Field(default=8, ge=1, le=1024)  # photos per generate call and per write
    describe_max_new_tokens: int = Field(default=256, ge=1)  # capped at VQA_MAX_NEW_TOKENS_CAP

    # CLIP runner (adaptive batching)
    clip_adaptive_batching: bool = True  # false: one encode call per request (for comparison)
    clip_max_batch_size: int = Field(default=64, ge=2)  # BentoML needs 2 or more
    clip_max_latency_ms: int = Field(default=20_000, ge=1)

    # VQA runner
    vqa_enabled: bool = True  # false: the VQA runner loads no model and VQA endpoints answer 503
    vqa_quantization: Literal["4bit", "8bit", "none"] = "4bit"  # bitsandbytes, CUDA only (VQA_RUNTIME=torch)
    # VLM runtime (runners/vlm_runtime.py): auto = PyTorch on CUDA; on a CPU OpenVINO when an export of VQA_MODEL
    # is cached and passes the fidelity gate, else PyTorch (logged, saying why). openvino: export when missing.
    vqa_runtime: Literal["auto", "torch", "openvino"] = "auto"
    vqa_openvino_weights: Literal["int8", "int4"] = "int8"  # weight precision of the OpenVINO export
    # OpenVINO CPU compute precision, pinned (the CPU plugin picks bf16 by itself on AMX/AVX-512-BF16 CPUs):
    # f32 everywhere, or bf16 where the CPU computes it natively (checked by the same fidelity gate).
    vqa_openvino_precision: Literal["f32", "bf16"] = "f32"
    vqa_openvino_cache: Path = Path("./data/vlm-openvino")  # exports, keyed by model files and export settings
    # The exporter's own environment (optimum-intel needs transformers < 5.6); relative to the project folder.
    vqa_export_env: Path = Path(".venv-vlm-export")
    # Fidelity gate: share of the fixed probe answers that must equal PyTorch fp32's (first 16 tokens, greedy).
    vqa_fidelity_min_match: float = Field(default=0.75, ge=0, le=1)
    vqa_torch_cpu_dtype: Literal["fp32", "bf16"] = "fp32"  # PyTorch on a CPU; bf16 only pays on AMX/AVX512-BF16
    # Memory guard: refuse to start when the runtime's estimated need is over the available memory (cgroup
    # limit or MemAvailable). false: load anyway (the kernel may kill the process).
    vqa_memory_guard: bool = True
    vqa_min_pixels: int | None = Field(default=None, ge=1)
    # Pixels per image or video frame at most: caps the model's own bound (Qwen2.5-VL's allows 12.8 M, ~15k
    # visual tokens for a phone photo); 1280*28*28 is Qwen's suggested balance. 0: the model's own bound.
    vqa_max_pixels: int = Field(default=1280 * 28 * 28, ge=0)
    vqa_max_new_tokens: int = Field(default=512, ge=1)
    vqa_max_new_tokens_cap: int = Field(default=2048, ge=1)
    vqa_video_fps: float = Field(default=1.0, gt=0)
    vqa_video_max_frames: int = Field(default=16, ge=2)
    vqa_max_batch_size: int = Field(default=8, ge=2)  # BentoML needs 2 or more
    vqa_max_latency_ms: int = Field(default=60_000, ge=1)
    vqa_max_images: int = Field(default=8, ge=1)
    vqa_max_text_chars: int = Field(default=16_000, ge=1)  # all text of one chat request; more gets 400

    # Asking the library (/ask, api/asking.py): at most this many retrieved photos go to the VQA model
    ask_max_images: int = Field(default=6, ge=1)
    # A photo that hybrid or text ranking found (by its description or the text drawn on it) goes to the
    # model, and so can be cited, only when CLIP alone ranks it among this many best photos for the query:
    # the picture must support it, not only its words (docs/security.md). 0: no such check.
    ask_clip_support: int = Field(default=10, ge=0)
    # Sent after the numbered photos, before the question; "" sends only the photos and the question
    ask_instruction: str = DEFAULT_ASK_INSTRUCTION

    # Security and load limits of the HTTP API
    api_key: SecretStr | None = None  # when set, every endpoint but /livez and /readyz needs it
    # Host names (the Host header, port ignored) the API answers, comma-separated; "*" any. Unset: any, except
    # that a service bound to a loopback address without API_KEY answers loopback names only (localhost,
    # 127.0.0.1, [::1]): a web page cannot reach it through DNS rebinding (docs/security.md).
    allowed_hosts: str | None = None
    public_metrics: bool = False  # /metrics without the API key
    public_docs: bool = False  # /docs.json and the Swagger UI without the API key
    max_upload_mb: float = Field(default=20.0, gt=0)
    # Decoding an image (width x height x bytes a pixel for its mode, and its RGB copy) may take at most
    # this much memory; over it, JPEGs decode at a reduced scale and anything else answers 400 (core/images.py).
    image_max_decode_mb: float = Field(default=200.0, gt=0)
    max_concurrency: int = Field(default=64, ge=1)  # requests in flight in the API; more get 429
    vqa_max_queue: int = Field(default=32, ge=1)  # VQA requests in flight; more get 503
    request_timeout_s: float = Field(default=110.0, gt=0)  # 504 past this (before the first byte)
    # Receipt deadlines, from a request's first byte: its headers, then headers and body together
    # (408 and the connection closed past them; api/receipt_deadline.py).
    request_header_timeout_s: float = Field(default=10.0, gt=0)
    request_body_timeout_s: float = Field(default=60.0, gt=0)
    retry_after_s: int = Field(default=2, ge=1)

    # Search API
    search_max_top_k: int = Field(default=100, ge=1)
    max_query_chars: int = Field(default=512, ge=1)
    service_timeout_s: int = Field(default=120, ge=1)
    search_max_response_mb: float = Field(default=64.0, gt=0)  # the largest base64 answer (400 past it)
    search_stream_slots: int = Field(default=1, ge=0)  # base64 files streamed at once (0: no limit)
    search_max_window: int = Field(default=1000, ge=1)  # the largest offset + top_k of a search page
    thumbnail_cache: Path = Path("./data/thumbnails")  # GET /images/... thumbnails, made once per file version

    # Operations
    log_format: Literal["json", "text"] = "json"  # the one-line-per-request log (api/logs.py)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
