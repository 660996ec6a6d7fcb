"""Experiment tracking: MLflow runs (created by the launcher, filled by rank 0) and metric-vs-bytes history."""
