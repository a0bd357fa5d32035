from experiments import TableSpec

# No budget of its own: every run trains at its profile's per-dataset budget (benchmark/profiles.py), the
# one the learning curves chose. (Until 2026-12 the cpu table trained 80-128 steps per run to fit an hour;
# every model was then at chance, results/superseded/table1_diagnostics.md.)

TABLE = TableSpec(
    1, "Representation swapping and generation (Acc, IS, H(y|x), H(y))",
    models=("mocogan", "dsvae", "baseline", "s3vae", "baseline-sv"),
    datasets=("smmnist", "sprites", "faces"),
    metrics=("acc", "is", "h_y_given_x", "h_y"),
    # sprites: acc = mean of the action side and the per-attribute static side (the paper's column);
    # acc_all_static = all four attributes at once, acc_all = the row value with it
    # probe_leakage / probe_purity: linear probes of every label family from z_f and z_1:T (metrics/probes.py)
    extra_metrics=("acc_action", "acc_static", "acc_all_static", "acc_all", "label_kl", "probe_leakage",
                   "probe_purity"),
)
