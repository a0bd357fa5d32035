from experiments import TableSpec

TABLE = TableSpec(
    3, "Speaker verification EER (%) from z_f (lower is better) and z_{1:T} (higher is better)",
    models=("fhvae", "dsvae", "s3vae"),
    datasets=("speech",),
    metrics=("eer_z_f", "eer_z_t"),
)
