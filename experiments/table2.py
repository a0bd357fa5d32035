from experiments import TableSpec

TABLE = TableSpec(
    2, "Ablation of the self-supervision and regularisation terms (MUG)",
    models=("no-scc", "no-dfp", "no-mi", "s3vae"),
    datasets=("faces",),
    metrics=("acc", "is", "h_y_given_x", "h_y"),
    extra_metrics=("label_kl", "probe_leakage", "probe_purity"),
    optional_datasets=("smmnist", "sprites"),
)
