"""The one place a TextReader is built from settings (OCR_*): the indexer's stage, its Ray actors and `--watch`
read with the same options, and `ocr_by_of` names them without loading anything."""

from __future__ import annotations

from config import Settings
from runners.ocr.reader import ReadOptions, TextReader


def read_options_of(settings: Settings) -> ReadOptions:
    return ReadOptions(runtime=settings.ocr_runtime, max_lines=settings.ocr_max_lines,
                       min_confidence=settings.ocr_min_confidence, max_pixels=settings.ocr_max_pixels,
                       threads=settings.ocr_threads)


def open_reader(settings: Settings) -> TextReader:
    return TextReader(read_options_of(settings))


def ocr_by_of(settings: Settings) -> str:
    """The `ocr_by` open_reader(settings) will write, known without loading the models."""
    return read_options_of(settings).ocr_by
