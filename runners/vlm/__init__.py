"""Qwen2.5-VL visual question answering: the package's one public surface.

- model.py: VisionLanguageModel (generate_each, start_stream) over one seam, runtime.py's Runtime;
  inputs.py prepares, checks and collates conversations (video.py reads clips);
  torch_runtime.py and openvino_runtime.py generate.
- loader.py: the only place a model is built (load_vlm: a folder on PyTorch; open_vlm: from settings, with the
  runtime VQA_RUNTIME picks, memory_guard.py's check and fidelity.py's probe gate).
- openvino_export.py (+ windows.py) make the OpenVINO export; export.py is its command line.
- describe.py: the model asked DESCRIBE_PROMPT about photos; protocol.py: the runner's wire types;
  service.py: the thin BentoML runner (imported by service.py only, never from here).
Heavy imports (torch, transformers, openvino) happen inside functions only.
"""

from runners.fidelity import RuntimeRefused
from runners.vlm.describe import Describer, Description, described_by_of, describer_id
from runners.vlm.inputs import Conversation, Generation, ItemError, VQAItem, item_messages
from runners.vlm.loader import load_vlm, open_describer, open_vlm
from runners.vlm.memory_guard import NotEnoughMemory
from runners.vlm.model import VisionLanguageModel, first_error, own_error
from runners.vlm.protocol import ChatRequest, ChatResult

__all__ = [
    "ChatRequest", "ChatResult", "Conversation", "Describer", "Description", "Generation", "ItemError",
    "NotEnoughMemory", "RuntimeRefused", "VQAItem", "VisionLanguageModel", "described_by_of", "describer_id",
    "first_error", "item_messages", "load_vlm", "open_describer", "open_vlm", "own_error",
]
