"""S3VAE benchmark harness: registry, configs, trainer, tracking, data, judges, tables, sweeps."""
__version__ = "0.1.0"
