"""Model code: networks and losses only (no MLflow, no trainer, no registry imports)."""
