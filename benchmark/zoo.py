"""Registers every model by name. A preset is a builder plus the config values it fixes."""
from __future__ import annotations

from benchmark.registry import MODELS
from models.s3vae import S3VAE, SupervisedS3VAE

MODELS.register("s3vae", S3VAE, doc="S3VAE, full objective (Eq. 9): λ = (1000, 100, 1)")
MODELS.register("baseline", S3VAE, defaults={"loss.lambda_scc": 0.0, "loss.lambda_dfp": 0.0, "loss.lambda_mi": 0.0},
                doc="S3VAE without SCC, DFP and MI (the seed's 'baseline')")
MODELS.register("no-scc", S3VAE, defaults={"loss.lambda_scc": 0.0}, doc="S3VAE without the static consistency constraint")
MODELS.register("no-dfp", S3VAE, defaults={"loss.lambda_dfp": 0.0}, doc="S3VAE without dynamic factor prediction")
MODELS.register("no-mi", S3VAE, defaults={"loss.lambda_mi": 0.0}, doc="S3VAE without the MI regulariser")
MODELS.register("baseline-sv", SupervisedS3VAE,
                defaults={"loss.lambda_scc": 0.0, "loss.lambda_dfp": 0.0, "loss.lambda_mi": 0.0},
                doc="baseline + CE heads on ground-truth labels (the seed's fully supervised reference)")


def build_model(cfg, info):
    """The model named by cfg.model.name for dataset `info`."""
    return MODELS.build(cfg.model.name, info, cfg.model, cfg.loss)
