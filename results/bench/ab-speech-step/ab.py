"""Within-one-process A/B of a training step: the plain path (the MWS MI's pairwise [.., M, M, D] form in fp32,
as before 2026-12-05; two LSTM_f calls for S3VAE's SCC) against the fast one (the GEMM form in float64; one
shared LSTM_f call), alternated 5 steps at a time so the shared host's drifts hit both alike.

    python results/bench/ab-speech-step/ab.py MODEL DATASET BATCH [OUT.json]   (from the repository root)

Timing only: both variants train the same model in turn (the fast path's numbers equal the plain one's:
tests/test_fast_paths.py, tests/test_losses.py)."""
import json
import statistics
import sys
import time

import torch

import models.losses as L
import models.s3vae
from benchmark.config import resolve_config
from benchmark.data import load_dataset
from benchmark.tables import hardware
from benchmark.tracking import git_info
from benchmark.zoo import build_model

FAST_LDM = L.log_density_matrix


def plain_ldm(z, mean, logvar):
    """The code before: log q(z_i | x_j) through an [..., M, M, D] intermediate, fp32."""
    z, mean, logvar = z.float().unsqueeze(-2), mean.float().unsqueeze(-3), logvar.float().unsqueeze(-3)
    return (-0.5 * (L.LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))).sum(-1)


def use(fast: bool) -> None:
    L.log_density_matrix = FAST_LDM if fast else plain_ldm
    models.s3vae.S3VAE.shared_scc_pass = fast


def main(model_name, dataset, bs, out=None, rounds=30, steps=5):
    torch.set_num_threads(2)
    ds = load_dataset(dataset, "train", "cpu")
    model = build_model(resolve_config(model_name, dataset, "cpu"), ds.info).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    batch, weights = ds.batch(torch.arange(bs)), model.loss_weights()

    def step():
        terms = model.loss_terms(batch)
        total = sum(w * terms[k] for k, w in weights.items() if w and k in terms)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    times = {False: [], True: []}
    for fast in (False, True):  # warm-up
        use(fast)
        for _ in range(steps):
            step()
    for r in range(rounds):
        for fast in ((False, True) if r % 2 else (True, False)):
            use(fast)
            t = time.perf_counter()
            for _ in range(steps):
                step()
            times[fast].append((time.perf_counter() - t) / steps)
    plain, fast = statistics.median(times[False]), statistics.median(times[True])
    row = dict(model=model_name, dataset=dataset, profile="cpu", precision="fp32", batch_size=bs,
               plain_step_ms=round(plain * 1e3, 2), fast_step_ms=round(fast * 1e3, 2),
               speedup=round(plain / fast, 3), plain_sequences_per_s=round(bs / plain), fast_sequences_per_s=round(bs / fast))
    print(json.dumps(row))
    if out:
        prov = dict(command="python " + " ".join(sys.argv), **git_info(), hardware=hardware(),
                    date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    method=f"median of {rounds} alternated blocks of {steps} steps per variant, after {steps} warm-up steps each")
        with open(out, "w") as f:
            json.dump(dict(provenance=prov, row=row), f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
