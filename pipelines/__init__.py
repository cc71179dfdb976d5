"""The DVC stages of dvc.yaml, one module each (`bin/python -m pipelines.<stage>`); pipelines/README.md."""
