"""Text in photos (OCR): the package's one public surface.

- `TextReader` (reader.py): PIL image -> bounded `TextLine`s, on rapidocr's PP-OCRv6 models (ONNX Runtime or
  OpenVINO: OCR_RUNTIME); `ReadOptions` its options; loader.py the one place it is built from settings
  (`open_reader`), and `ocr_by_of` the id recorded with each photo's lines.
- text.py: `normalized` (the one form phrases and read text are compared in), `parse_query` (quoted phrases),
  `read_text_norm`, `contains_phrase`, `matched_lines`.

No BentoML here, and rapidocr is imported only when a first photo is read.
"""

from runners.ocr.loader import ocr_by_of, open_reader, read_options_of
from runners.ocr.reader import MODELS, RUNTIMES, ReadOptions, TextLine, TextReader
from runners.ocr.text import (
    MAX_PHRASES,
    TextQuery,
    contains_phrase,
    matched_lines,
    normalized,
    parse_query,
    read_text_norm,
)

__all__ = ["MAX_PHRASES", "MODELS", "RUNTIMES", "ReadOptions", "TextLine", "TextQuery", "TextReader",
           "contains_phrase", "matched_lines", "normalized", "ocr_by_of", "open_reader", "parse_query",
           "read_options_of", "read_text_norm"]
