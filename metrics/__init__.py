"""Evaluation metrics as pure functions: numpy arrays, torch tensors or lists in,
python floats (or numpy arrays) out. No state, no I/O, no logging.

This package must never import `benchmark`, `mlflow` or `optuna`; the harness
calls into it, never the other way round.
"""
