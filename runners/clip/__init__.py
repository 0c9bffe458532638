"""Chinese-CLIP: the package's one public surface.

- encoder.py: ClipEncoder (images and texts to unit vectors, per-item isolation) over one seam, runtime.py's
  Runtime; the variants torch_runtime.py, onnx_runtime.py, openvino_runtime.py.
- select.py picks the runtime (CLIP_RUNTIME): exported once (export.py), checked against PyTorch (fidelity.py),
  refused and fallen back; loader.py is the only place an encoder is built from settings.
- service.py: the thin BentoML runner (imported by service.py only, never from here).
Heavy imports (torch, transformers, onnxruntime, openvino) happen inside functions only.
"""

from runners.clip.encoder import ClipEncoder, encode_isolated, model_id_of
from runners.clip.fidelity import Bounds
from runners.clip.loader import open_clip
from runners.fidelity import RuntimeRefused

__all__ = ["Bounds", "ClipEncoder", "RuntimeRefused", "encode_isolated", "model_id_of", "open_clip"]
