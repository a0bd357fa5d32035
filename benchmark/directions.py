"""Which way is better, and what a metric is called, per metric: the one place that says it (leaderboard ranks,
curves' time-to-target and axis labels, table figures; the claims of experiments/claims.py are tested against it)."""
from __future__ import annotations

HIGHER, LOWER = "higher", "lower"

DIRECTIONS = {
    "acc": HIGHER,
    "is": HIGHER,            # inception score: confident and diverse generations
    "h_y_given_x": LOWER,    # intra-entropy: the judge is sure of each generated sequence
    "h_y": HIGHER,           # inter-entropy: the generated classes cover the label set
    "label_kl": LOWER,       # KL between the judge's labels of generated and real sequences
    "eer_z_f": LOWER,        # z_f should identify the speaker (PROTOCOLS.md: "z_f low (good)")
    "eer_z_t": HIGHER,       # z_{1:T} should not ("z_{1:T} high (good)")
    "recon_mse": LOWER,
    "probe_leakage": LOWER,  # metrics/probes.py: the wrong latent's probe accuracy above chance
    "probe_purity": HIGHER,  # the right latent's
}
# per-factor probes (probe_<factor>_z_f) have no direction of their own: good on one latent, bad on the other
# per-side / per-family accuracies (acc_action, acc_skin_static, recon_acc_identity, judge_acc_...)
HIGHER_PREFIXES = ("acc_", "recon_acc_", "judge_acc_")


def direction(metric: str) -> str:
    """'higher' or 'lower' is better for `metric`; a clear error for one that has no direction yet."""
    if metric in DIRECTIONS:
        return DIRECTIONS[metric]
    if metric.startswith(HIGHER_PREFIXES):
        return HIGHER
    raise ValueError(f"metric {metric!r} has no direction: add it to DIRECTIONS in benchmark/directions.py")


def direction_or_none(metric: str) -> str | None:
    """direction(), or None for a metric that has none (reported, not ranked)."""
    try:
        return direction(metric)
    except ValueError:
        return None


# the names figures give metrics (axis labels, panel titles)
NAMES = {"acc": "protocol Acc (%)", "is": "IS", "h_y_given_x": "H(y|x)", "h_y": "H(y)",
         "label_kl": "KL(judge labels: generated ‖ real)", "eer_z_f": "EER of z_f (%)", "eer_z_t": "EER of z_1:T (%)",
         "recon_mse": "recon MSE", "probe_leakage": "probe leakage", "probe_purity": "probe purity"}


def name(metric: str) -> str:
    """A metric's name in a figure: NAMES, `judge on recon: <family> (%)`, `<acc_...> (%)`, or the key itself."""
    if metric.startswith("recon_acc_"):
        return f"judge on recon: {metric[len('recon_acc_'):]} (%)"
    return NAMES.get(metric, f"{metric} (%)" if metric.startswith("acc") else metric)
