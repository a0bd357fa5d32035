"""The paper's qualitative claims, as data: which model should beat which, on what, where.
`benchmark/claims.py` tests them on the per-seed values of the committed tables."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    table: int
    dataset: str
    metric: str
    better: str        # "higher" or "lower": the direction in which `model` should beat `other`
    model: str
    other: str
    text: str


def _beats(table, datasets, metric, model, others, text):
    return [Claim(table, d, metric, "higher", model, o, text.format(other=o)) for d in datasets for o in others]


CLAIMS: list[Claim] = [
    *_beats(1, ("smmnist", "sprites", "faces"), "acc", "s3vae", ("baseline", "dsvae"),
            "Table 1: full S3VAE above {other} on Acc"),
    *_beats(2, ("faces",), "acc", "s3vae", ("no-scc", "no-dfp", "no-mi"),
            "Table 2: removing a term ({other}) lowers Acc"),
    Claim(3, "speech", "eer_z_t", "higher", "s3vae", "dsvae",
          "Table 3: S3VAE's z_{1:T} carries less speaker identity than DSVAE's (higher EER)"),
    Claim(3, "speech", "eer_z_f", "lower", "s3vae", "dsvae",
          "Table 3: S3VAE's z_f identifies speakers at least as well as DSVAE's (lower EER)"),
]
