"""λ1, λ2, λ3 of Eq. 9: the weights of the SCC triplet, the DFP loss and the MI penalty of S3VAE."""
import optuna

from experiments.sweeps import SPACES, Param, SearchSpace

SPACES.register("lambdas", SearchSpace(
    name="lambdas",
    doc="S3VAE's Eq. 9 weights λ1 (SCC), λ2 (DFP), λ3 (MI); the paper uses (1000, 100, 1)",
    model="s3vae",
    params={"loss.lambda_scc": Param(1.0, 1e4), "loss.lambda_dfp": Param(1.0, 1e3), "loss.lambda_mi": Param(0.1, 100.0)},
    # the protocol's Acc (mean over its sides): the quantity Tables 1-2 rank models by
    metric="acc",
    direction="maximize",
    datasets=("smmnist", "sprites", "faces"),
    sampler=lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=True),
    # prune when a trial's best val Acc so far is below the median of the others at the same epoch
    # (Optuna's rule), from the first reported epoch once 4 trials have finished
    pruner=lambda: optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
    fixed={"train.split": "fit"},  # train − val: the val score is on sequences the trial never trained on
))
