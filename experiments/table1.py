from experiments import TableSpec

TABLE = TableSpec(
    1, "Representation swapping and generation (Acc, IS, H(y|x), H(y))",
    models=("mocogan", "dsvae", "baseline", "s3vae", "baseline-sv"),
    datasets=("smmnist", "sprites", "faces"),
    metrics=("acc", "is", "h_y_given_x", "h_y"),
    extra_metrics=("acc_action", "acc_static", "label_kl"),
)
