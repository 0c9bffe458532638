"""The indexer job: fills the Qdrant collection from an image folder (`python -m indexer`).

Stages, each usable and tested on its own (after clip-retrieval's reader -> mapper -> writer -> runner):
- scan.py: reader, walks the library and lists image files with size and mtime;
- plan.py: compares the files with the collection and decides what to embed, reuse, keep or delete;
- decode.py: mapper, reads, hashes and decodes files in a worker pool;
- pipeline.py: runner, embeds in batches, upserts in batches, deletes what is gone, reports.
"""
