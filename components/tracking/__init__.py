"""Experiment tracking: MLflow runs, per-step metrics and the exported model as a pyfunc (mlflow_logging.py)."""
