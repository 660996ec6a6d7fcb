"""Experiment tracking (MLflow) of params, metrics and communication volume; planned in the configs issue."""
