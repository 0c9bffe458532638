"""Neutral helpers every layer may use (runners, store, indexer, api, service): image decoding, metric
definitions, the BentoML workarounds. Nothing here imports bentoml, api/ or torch at module top."""
