"""`bench`: one model, and the suite over models × datasets that writes results with provenance."""
import json

from benchmark.__main__ import main


def test_bench_suite_skips_models_not_built_for_the_data(workdir, capsys):
    out = workdir / "bench" / "smoke.json"
    assert main(["bench", "--model", "s3vae,fhvae", "--dataset", "sprites", "--profile", "smoke",
                 "--steps", "1", "--warmup", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["model"], r["dataset"]) for r in data["rows"]] == [("s3vae", "sprites")], "fhvae is audio-only"
    r = data["rows"][0]
    assert r["sequences_per_s"] > 0 and r["gflop_per_sequence"] > 0 and r["parameters"] > 0
    assert {"command", "git_commit", "hardware", "steps"} <= set(data["provenance"])
    md = out.with_suffix(".md").read_text()
    assert "| s3vae | sprites | smoke |" in md and "fhvae" not in md.split("| model")[1]
    assert "| s3vae | sprites |" in capsys.readouterr().out
