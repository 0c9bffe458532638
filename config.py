"""One typed settings object, read from environment variables and `.env`.

Every setting is documented by its field's description (docs/settings.md is generated from them:
`python scripts/settings_doc.py > docs/settings.md`). Import `get_settings()`;
it is cached so every module in a process sees the same values. A command line starts with
`load_settings_or_exit()`: a bad setting is then one line naming it, and exit 2.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
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
    """Every field is a setting: its environment variable is the field name in capitals. Each field's
    description is its documentation: docs/settings.md is generated from them (scripts/settings_doc.py)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Models
    clip_model: str = Field(default=DEFAULT_CLIP_MODEL, description="CLIP model id or local folder.")
    vqa_model: str = Field(default=DEFAULT_VQA_MODEL, description="VQA model id or local folder.")
    model_source: Literal["modelscope", "huggingface"] = Field(
        default="modelscope", description="Where a model id is downloaded from: `modelscope` or `huggingface`.")
    model_cache_dir: Path | None = Field(
        default=None, description="Model cache folder; unset: the source's own (ModelScope's `~/.cache/modelscope/hub`"
        " or Hugging Face's cache).")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="`auto`, `cpu` or `cuda`.")
    clip_runtime: Literal["auto", "torch", "openvino", "onnx", "openvino-bf16", "torch-bf16", "onnx-int8"] = Field(
        validation_alias=AliasChoices("clip_runtime", "clip_backend"),
        default="auto",
        description="How CLIP vectors are computed (runners/clip/select.py; docs/cpu.md, \"CLIP runtimes\"): "
        "`auto` = PyTorch on CUDA; on CPU fp32 OpenVINO (else fp32 ONNX Runtime, else PyTorch), each only with "
        "identical probe rankings; faster than PyTorch eager fp32 on the CPU measured here (BENCHMARKS.md, "
        "\"Real size: CLIP\"). The low-precision runtimes (`openvino-bf16`, `torch-bf16`, `onnx-int8`) are opt-in. "
        "Old name, still read: `CLIP_BACKEND`.")
    clip_runtime_cache: Path = Field(
        validation_alias=AliasChoices("clip_runtime_cache", "clip_backend_cache"),
        default=Path("./data/clip-backends"),
        description="Folder of the CLIP runtimes' exports (ONNX, OpenVINO IR) and their probe references, keyed by "
        "model id and file hashes. Old name, still read: `CLIP_BACKEND_CACHE`.")
    clip_runtime_min_top1: float = Field(
        validation_alias=AliasChoices("clip_runtime_min_top1", "clip_backend_min_top1"),
        default=0.9, ge=0, le=1,
        description="Least share of probe queries whose top-1 result equals PyTorch fp32's (`auto`: 1.0). "
        "Old name, still read: `CLIP_BACKEND_MIN_TOP1`.")
    clip_runtime_min_cosine: float = Field(
        validation_alias=AliasChoices("clip_runtime_min_cosine", "clip_backend_min_cosine"),
        default=0.99, ge=-1, le=1, description="Least cosine of any probe vector with PyTorch fp32's. "
        "Old name, still read: `CLIP_BACKEND_MIN_COSINE`.")

    # Image library and vector store
    image_library: Path = Field(default=Path("./images"), description="Root folder of the photos.")
    library_max_file_mb: float = Field(
        default=256.0, gt=0,
        description="The largest library file read into memory, by `/images`, `image_id`, base64 results, `/ask` "
        "and the indexer alike; a larger one is refused as not a library file (core/library.py), so a huge or "
        "endless file cannot exhaust memory (docs/security.md).")
    qdrant_path: Path = Field(default=Path("./data/qdrant"), description="The embedded vector store's folder.")
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server URL; set, it switches to the server backend (`qdrant-client`).")
    qdrant_api_key: str | None = Field(default=None, description="Qdrant server API key.")
    qdrant_collection: str = Field(default="images", description="Collection name.")
    qdrant_shards: int = Field(
        default=1, ge=1, description="Shards of the collection, used when the indexer creates it on a server.")
    qdrant_replication_factor: int = Field(
        default=1, ge=1,
        description="Replication factor of the collection, used when the indexer creates it on a server.")
    qdrant_quantization: Literal["int8", "binary", "none"] = Field(
        default="int8",
        description="`int8`: the collection also keeps int8 copies of the vectors in RAM; HNSW is built and searched "
        "on them and the best candidates are rescored with the float vectors (scores stay exact cosines). `binary`: "
        "1-bit copies (32x smaller than float32, coarser: 16x oversampled, then rescored; docs/scaling.md). `none`: "
        "float vectors only. Applies when the indexer creates or optimizes a collection.")
    qdrant_oversampling: float | None = Field(
        default=None, ge=1,
        description="Candidates rescored with the float vectors, as a multiple of top_k (unset: 2 for int8, 16 for "
        "binary).")
    qdrant_on_disk: bool = Field(
        default=False,
        description="Float vectors memory-mapped from disk, for collections larger than RAM (applies to new "
        "collections; the quantized copies stay in RAM).")
    qdrant_hnsw_ef: int = Field(
        default=512, ge=1,
        description="Search-time HNSW beam width: higher finds more of the true nearest neighbours, slower. On the "
        "default graph (HNSW m 32, ef_construct 200) the default 512 gives recall@10 0.971 at 1,000,000 points in "
        "6.01 ms a query, and 1024 gives 0.994 in 10.40 ms (BENCHMARKS.md \"Search latency at scale vs the seed "
        "dict loop (cliplike vectors m32 efc200)\": recall and latency per value at 10k / 100k / 1M points).")
    service_url: str = Field(
        default="http://127.0.0.1:3000",
        description="The service's address written to its address file in QDRANT_PATH for the indexer, only when "
        "`bentoml serve` does not hand the API worker its listening socket (it does: the real port, `--port`, is "
        "found by itself; a wildcard host becomes 127.0.0.1; api/internal_store.py).")

    # Indexer
    index_batch_size: int = Field(
        default=32, ge=1, le=4096,
        description="Images per embedding and upsert batch (through a running service, sent in requests of at most "
        "256 points).")
    index_workers: int = Field(default=4, ge=1, le=64, description="Decode threads of the indexer.")
    index_engine: Literal["local", "ray"] = Field(
        default="local",
        description="Which engine decodes and embeds (`--engine`): `local` = this process; `ray` = a Ray cluster "
        "(RAY_ADDRESS, as Ray reads it; unset: a local Ray for the run) with Ray Data (indexer/ray_engine.py, "
        "docs/scaling.md).")
    index_ray_embed_actors: int = Field(default=1, ge=1, description="Ray: CLIP actors, one model loaded in each.")
    index_ray_describe_actors: int = Field(
        default=1, ge=1, description="Ray: describer actors (`--describe`), one VQA model loaded in each.")
    index_ray_writers: int = Field(
        default=2, ge=1, description="Ray: write tasks in flight (with QDRANT_URL or through a running service).")
    index_ray_gpus_per_actor: float | None = Field(
        default=None, ge=0, description="Ray: GPUs each model actor holds (unset: 1 when the cluster has GPUs).")
    index_ray_cpus_per_actor: float = Field(
        default=1.0, gt=0, description="Ray: CPUs (torch threads) each model actor holds.")
    video_frame_interval_s: float = Field(
        default=1.0, gt=0,
        description="Videos in the library are indexed as moments (docs/indexing.md): a frame every this many "
        "seconds is embedded by CLIP.")
    video_max_frames: int = Field(
        default=240, ge=1, le=100_000,
        description="Frames embedded per video at most: a longer clip is covered evenly with this many.")
    video_max_duration_s: float = Field(
        default=120.0, gt=0,
        description="The first this many seconds of a video are sampled every VIDEO_FRAME_INTERVAL_S; what is left "
        "of VIDEO_MAX_FRAMES is spread evenly over the rest of the clip.")
    video_scene_cut: float = Field(
        default=20.0, ge=0, le=255,
        description="A video's frame whose small grey copy differs from the frame before by more than this "
        "(mean absolute difference, 0-255) is a scene change: it is embedded too (between the sampled frames, "
        "within VIDEO_MAX_FRAMES), so a moment starts where its scene does. 0: only the sampled frames.")
    video_merge_cosine: float = Field(
        default=0.92, ge=-1, le=1,
        description="Consecutive frames of a video whose CLIP vectors have at least this cosine are one moment "
        "(one point); 1: every sampled frame is its own moment.")
    watch_interval_s: float = Field(
        default=2.0, gt=0, description="`python -m indexer --watch`: seconds between two listings of the library.")
    watch_settle_s: float = Field(
        default=2.0, ge=0,
        description="`--watch`: a changed file is indexed once its size and mtime stayed the same this long.")
    watch_events: bool = Field(
        default=True,
        description="`--watch`: filesystem events (inotify, FSEvents, ReadDirectoryChangesW) wake it before the "
        "next listing; `false`: polling only.")
    index_describe: bool = Field(
        default=False,
        description="`true`: every `python -m indexer` run (not `--watch`) also runs the describe stage "
        "(indexer/describe_stage.py: VQA_MODEL asked DESCRIBE_PROMPT about each photo), as `--describe` does.")
    describe_prompt: str = Field(
        default=DEFAULT_DESCRIBE_PROMPT,
        description="What the describe stage asks `VQA_MODEL` about each photo; changing it re-describes every "
        "photo on the next `--describe` run.")
    describe_batch_size: int = Field(
        default=8, ge=1, le=1024,
        description="Photos per batch of the describe stage (one generate call, one write).")
    describe_max_new_tokens: int = Field(
        default=256, ge=1,
        description="Longest description answer in tokens (capped at `VQA_MAX_NEW_TOKENS_CAP`).")
    describe_max_pixels: int = Field(
        default=0, ge=0,
        description="Pixels per photo the describe stage hands the model at most (photos above are shrunk, "
        "keeping their shape); 0: `VQA_MAX_PIXELS`. A CPU's prefill time grows with the pixels: 501760 (640 visual "
        "tokens) halves it (docs/cpu.md); what a smaller budget costs in reading text is measured in BENCHMARKS.md "
        "(\"Describe pixel budget\"). Changing it does not re-describe photos.")
    index_ocr: bool = Field(
        default=False,
        description="`true`: every `python -m indexer` run, and `--watch` after each pass, also runs the OCR stage "
        "(indexer/ocr_stage.py: the text lines in each photo, read by rapidocr's PP-OCRv6 models), as `--ocr` does "
        "(docs/text-in-photos.md).")
    ocr_runtime: Literal["onnxruntime", "openvino"] = Field(
        default="onnxruntime",
        description="What runs the OCR models: `onnxruntime` or `openvino` (the same models and reads; changing it "
        "does not re-read photos).")
    ocr_max_lines: int = Field(
        default=100, ge=1, le=1000,
        description="Lines kept per photo at most: its most confident ones (a photo full of small print stays "
        "bounded). Changing it re-reads every photo on the next `--ocr` run.")
    ocr_min_confidence: float = Field(
        default=0.5, ge=0, le=1,
        description="Least confidence (0-1) of a line kept (a lone character needs 0.9). Changing it re-reads "
        "every photo on the next `--ocr` run.")
    ocr_max_pixels: int = Field(
        default=4_000_000, ge=10_000,
        description="Pixels a photo is shrunk to, at most, before it is read (rapidocr itself reads at most 2,000 px "
        "a side). Changing it re-reads every photo on the next `--ocr` run.")
    ocr_batch_size: int = Field(
        default=16, ge=1, le=1024, description="Photos per batch of the OCR stage (read, then written at once).")
    ocr_threads: int = Field(
        default=0, ge=0, le=256, description="Threads the OCR runtime uses for one photo; 0: every core.")

    # CLIP runner (adaptive batching)
    clip_adaptive_batching: bool = Field(
        default=True,
        description="`false`: one encode call per request (only to measure what batching gains: "
        "`bench/search_batching.py`).")
    clip_max_batch_size: int = Field(
        default=64, ge=2, description="Adaptive batching of the CLIP runner: largest batch (BentoML needs 2 or more).")
    clip_max_latency_ms: int = Field(
        default=20_000, ge=1, description="Adaptive batching of the CLIP runner: longest wait in milliseconds.")

    # VQA runner
    vqa_enabled: bool = Field(
        default=True, description="`false`: the VQA runner loads no model and VQA endpoints answer 503.")
    vqa_quantization: Literal["4bit", "8bit", "none"] = Field(
        default="4bit", description="On CUDA (bitsandbytes, `VQA_RUNTIME=torch`): `4bit`, `8bit` or `none`.")
    vqa_runtime: Literal["auto", "torch", "openvino"] = Field(
        default="auto",
        description="The VQA runtime (runners/vlm/loader.py; docs/cpu.md): `auto` is PyTorch on CUDA; on a CPU, "
        "OpenVINO when an export of VQA_MODEL (`python -m runners.vlm.export`) is cached and passes the fidelity "
        "gate, else PyTorch (logged, saying why). `openvino`: export when missing.")
    vqa_openvino_weights: Literal["auto", "int8", "int4"] = Field(
        default="auto",
        description="Weight precision of the OpenVINO export: `auto` serves the export that exists (int8 "
        "preferred, else int4; `python -m runners.vlm.export --weights int4` then serves int4) and makes int8 "
        "when exporting anew; `int8` or `int4` ask for that one.")
    vqa_openvino_precision: Literal["f32", "bf16"] = Field(
        default="f32",
        description="OpenVINO CPU compute precision, pinned (the CPU plugin picks bf16 by itself on "
        "AMX/AVX-512-BF16 CPUs): `f32` everywhere, or `bf16` where the CPU computes it natively (checked by the "
        "same fidelity gate).")
    vqa_openvino_cache: Path = Field(
        default=Path("./data/vlm-openvino"),
        description="Where OpenVINO exports are kept, keyed by the model's files and the export settings.")
    vqa_export_env: Path = Field(
        default=Path(".venv-vlm-export"),
        description="The exporter's own environment (optimum-intel needs transformers < 5.6); relative to the "
        "project folder.")
    vqa_fidelity_min_match: float = Field(
        default=0.75, ge=0, le=1,
        description="Fidelity gate: share of the fixed probe answers that must equal PyTorch fp32's (first 16 "
        "tokens, greedy) for OpenVINO to serve.")
    vqa_torch_cpu_dtype: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="PyTorch on a CPU: `fp32` or `bf16` (opt-in; pays only on CPUs with AMX or AVX-512 BF16).")
    vqa_memory_guard: bool = Field(
        default=True,
        description="Refuse to start when the VQA runtime's estimated memory need is over the available memory "
        "(cgroup limit or MemAvailable). `false`: load anyway (the kernel may kill the process).")
    vqa_min_pixels: int | None = Field(
        default=None, ge=1,
        description="Pixels per image or video frame at least: smaller images are raised (unset: the model's own "
        "minimum).")
    vqa_max_pixels: int = Field(
        default=1280 * 28 * 28, ge=0,
        description="Pixels per image or video frame at most: caps the model's own bound (Qwen2.5-VL's allows "
        "12.8 M, ~15k visual tokens for a phone photo); 1280*28*28 is Qwen's suggested balance. 0: the model's "
        "own bound.")
    vqa_vision_cache_mb: int = Field(
        default=256, ge=0,
        description="Follow-up questions: MiB of vision-tower outputs kept per runner (an LRU keyed by the pixels "
        "the model sees, after resizing, with the model, runtime and grid), so a second question, chat turn, `/ask` "
        "or description of the same photo skips its vision encoding (a 1-MP photo on Qwen2.5-VL-3B: ~10 MiB "
        "in f32). PyTorch only (docs/cpu.md 'Follow-up questions'). 0: off.")
    vqa_prefix_cache_mb: int = Field(
        default=512, ge=0,
        description="Follow-up questions: MiB of attention (KV) caches of prompt prefixes kept per runner (the "
        "prompt up to its last image, keyed by its tokens and its images' content), so a follow-up question "
        "prefills only its own words (a 1-MP photo on Qwen2.5-VL-3B: ~100 MiB in f32). PyTorch only, for a "
        "question asked alone (not batched with others). 0: off.")
    vqa_max_new_tokens: int = Field(default=512, ge=1, description="Default answer length in tokens.")
    vqa_max_new_tokens_cap: int = Field(
        default=2048, ge=1, description="Largest answer length in tokens a request may ask for.")
    vqa_video_fps: float = Field(default=1.0, gt=0, description="Video sampling: frames per second.")
    vqa_video_max_frames: int = Field(default=16, ge=2, description="Video sampling: at most this many frames.")
    vqa_max_batch_size: int = Field(
        default=8, ge=2, description="Adaptive batching of the VQA runner: largest batch (BentoML needs 2 or more).")
    vqa_max_latency_ms: int = Field(
        default=60_000, ge=1, description="Adaptive batching of the VQA runner: longest wait in milliseconds.")
    vqa_max_images: int = Field(default=8, ge=1, description="Images per chat request.")
    vqa_max_text_chars: int = Field(
        default=16_000, ge=1,
        description="Characters of text in all messages of one chat request together (400 beyond).")

    # Asking the library (/ask, api/asking.py)
    ask_max_images: int = Field(
        default=6, ge=1,
        description="The most retrieved photos `/ask` gives the VQA model (`top_k` 1 … this).")
    ask_clip_support: int = Field(
        default=10, ge=0,
        description="A photo that hybrid or text ranking found (by its description or the text drawn on it) goes "
        "to the model, and so can be cited, only when CLIP alone ranks it among this many best photos for the "
        "query: the picture must support it, not only its words (docs/security.md). 0: no such check.")
    ask_instruction: str = Field(
        default=DEFAULT_ASK_INSTRUCTION,
        description="Sent after the numbered photos, before the question; `\"\"`: only the numbered photos and the "
        "question (one photo: what `/vqa` sends).")

    # Security and load limits of the HTTP API
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, every endpoint but /livez, /readyz and the web page's static files needs "
        "`Authorization: Bearer <key>` (docs/security.md); printable ASCII, no surrounding spaces, else the service "
        "does not start.")
    allowed_hosts: str | None = Field(
        default=None,
        description="Host names (the Host header, port ignored) the API answers, comma-separated; `*`: any. Unset: "
        "any, except that a service bound to a loopback address without API_KEY answers loopback names only "
        "(localhost, 127.0.0.1, [::1]): a web page cannot reach it through DNS rebinding (docs/security.md).")
    public_metrics: bool = Field(default=False, description="`/metrics` without the API key when `API_KEY` is set.")
    public_docs: bool = Field(
        default=False, description="`/docs.json` and the Swagger UI without the API key when `API_KEY` is set.")
    max_upload_mb: float = Field(default=20.0, gt=0, description="Largest request body in MB (413 beyond).")
    image_max_decode_mb: float = Field(
        default=200.0, gt=0,
        description="Most memory one image's decode may take (width x height x the bytes a pixel takes for its "
        "mode, and its RGB copy); over it a JPEG decodes at a reduced scale, anything else answers 400 "
        "(core/images.py).")
    max_concurrency: int = Field(default=64, ge=1, description="Requests in flight in the API (429 beyond).")
    vqa_max_queue: int = Field(default=32, ge=1, description="VQA requests in flight (503 beyond).")
    request_timeout_s: float = Field(
        default=110.0, gt=0, description="504 when no response has started by then (seconds).")
    request_header_timeout_s: float = Field(
        default=10.0, gt=0,
        description="408 and the connection closed when a request's headers have not arrived by then, from its "
        "first byte (api/http/receipt_deadline.py).")
    request_body_timeout_s: float = Field(
        default=60.0, gt=0,
        description="408 and the connection closed when a request's headers and body together have not arrived "
        "by then, from its first byte.")
    retry_after_s: int = Field(default=2, ge=1, description="The `Retry-After` of 429/503 answers (seconds).")

    # Search API
    search_max_top_k: int = Field(default=100, ge=1, description="Largest `top_k`.")
    max_query_chars: int = Field(default=512, ge=1, description="Longest query or question in characters.")
    service_timeout_s: int = Field(
        default=120, ge=1, description="BentoML's own request timeout of the services (a backstop; seconds).")
    search_max_response_mb: float = Field(
        default=64.0, gt=0,
        description="Largest search answer with base64 images (`include_image: true`), counted from the file sizes "
        "in the index before any file is read; 400 `response_too_large` past it.")
    search_stream_slots: int = Field(
        default=1, ge=0,
        description="Base64 files of search answers the API process encodes and sends at once; the others wait "
        "their turn, so light requests stay fast under heavy downloads (a client that stops reading gives its "
        "turn up after 0.25 s); 0: no limit.")
    search_max_window: int = Field(default=1000, ge=1, description="Largest `offset + top_k` of a search page.")
    thumbnail_cache: Path = Field(
        default=Path("./data/thumbnails"),
        description="Folder of the cached thumbnails of `GET /images/...`, made once per file version.")

    # Operations
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="The one-line-per-request log on stderr (api/http/logs.py): `json` or `text` (`key=value`).")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def setting_problems(exc: ValidationError) -> list[str]:
    """One line per refused setting: its environment variable and pydantic's reason."""
    return [f"{'.'.join(str(part) for part in error['loc']).upper()}: {error['msg']}" for error in exc.errors()]


def load_settings_or_exit() -> Settings:
    """get_settings() for a command line: a bad setting is one line on stderr naming it, and exit 2 (the
    code docs/indexing.md gives bad settings), not a traceback that a job runner reads as a failed run."""
    try:
        return get_settings()
    except ValidationError as exc:
        for line in setting_problems(exc):
            print(f"error: {line} (docs/settings.md)", file=sys.stderr)
        raise SystemExit(2) from None
