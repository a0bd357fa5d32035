from experiments import TableSpec

# At `cpu` the 45 runs of this table get a budget of about 40 s of training each, so that the table
# fits ~1 h on 2 cores: half the cpu profile's width (s3vae/sprites 54 vs 19.5 seq/s in `bench`) and
# a step budget per dataset (smmnist has 15 frames per sequence, the others 8). This is far below
# what the models need (Table 2's faces runs, at twice the width and 2x the steps, are at chance):
# the cpu table checks the pipeline end to end; `--profile paper` is the paper's budget.
_CPU = {"model.width": 0.25, "model.hidden": 64}

TABLE = TableSpec(
    1, "Representation swapping and generation (Acc, IS, H(y|x), H(y))",
    models=("mocogan", "dsvae", "baseline", "s3vae", "baseline-sv"),
    datasets=("smmnist", "sprites", "faces"),
    metrics=("acc", "is", "h_y_given_x", "h_y"),
    # sprites: acc = mean of the action side and the per-attribute static side (the paper's column);
    # acc_all_static = all four attributes at once, acc_all = the row value with it
    extra_metrics=("acc_action", "acc_static", "acc_all_static", "acc_all", "label_kl"),
    budgets={"cpu": {"sprites": {**_CPU, "train.max_steps": 128},
                     "smmnist": {**_CPU, "train.max_steps": 80},
                     "faces": {**_CPU, "train.max_steps": 128}}},
)
