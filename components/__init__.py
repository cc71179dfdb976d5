"""LLaVA-UHD, reproducible: the library the pipeline stages (pipelines/) are made of; components/README.md."""
