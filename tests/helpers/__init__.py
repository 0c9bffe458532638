"""Helpers shared by test modules (test modules never import each other):

    stores    the store backends every store test runs on, points with known vectors and payloads
    indexing  whole indexer runs in-process with a counting encoder; the `python -m indexer` command line
    video     video files written from frames
    errors    the API's error shape, asserted
    browser   the web page in headless Chromium (Playwright): launch, a tab that fails on script errors, search
    hostile_names  a library of hostile file names (newlines, %, #, HTML, emoji, NFD, 255 bytes, not UTF-8)

tests/serving.py (a real `bentoml serve` on a free port) and tests/shapes.py (synthetic images with known
content) sit beside them, at tests/, because bench/ uses them too.
"""
