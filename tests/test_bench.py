"""`bench`: one model, and the suite over models × datasets that writes results with provenance."""
import json

import torch

from benchmark.__main__ import main


def test_bench_suite_skips_models_not_built_for_the_data(workdir, capsys):
    out = workdir / "bench" / "smoke.json"
    assert main(["bench", "--model", "s3vae,fhvae", "--dataset", "sprites", "--profile", "smoke",
                 "--steps", "1", "--warmup", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["model"], r["dataset"]) for r in data["rows"]] == [("s3vae", "sprites")], "fhvae is audio-only"
    r = data["rows"][0]
    assert r["sequences_per_s"] > 0 and r["gflop_per_sequence"] > 0 and r["parameters"] > 0
    assert {"command", "git_commit", "hardware", "steps", "roofline_gflops"} <= set(data["provenance"])
    # the fraction is the achieved rate over the GEMM probe of the row's precision measured in the same process
    # (bf16 where `auto` picks it: CPUs with AVX-512 BF16 / AMX)
    assert r["fraction_of_roofline"] == r["achieved_gflops"] / data["provenance"]["roofline_gflops"][r["precision"]]
    md = out.with_suffix(".md").read_text()
    assert "| s3vae | sprites | train step | smoke |" in md and "fhvae" not in md.split("| model")[1]
    assert "fraction_of_roofline" in md and "| s3vae | sprites |" in capsys.readouterr().out


def test_bench_eval_row_and_operator_profile(workdir, capsys):
    assert main(["bench", "--model", "s3vae", "--dataset", "sprites", "--profile", "smoke", "--steps", "1",
                 "--warmup", "0", "--eval", "--max-sequences", "12", "--profile-ops", "4"]) == 0
    out = capsys.readouterr().out
    assert "| s3vae | sprites | eval (3 passes) | smoke |" in out
    assert out.count("top operators by self time") == 2 and "`aten::" in out


def test_gemm_probe_counts_2n3_flops(monkeypatch):
    """Known answer: with the clock advancing 1 s per reading pair, an n×n matmul reports 2n³/1e9 GFLOP/s."""
    from benchmark import roofline
    ticks = iter(range(100))
    monkeypatch.setattr(roofline.time, "perf_counter", lambda: float(next(ticks)))
    assert roofline.gemm_gflops(torch.float32, "cpu", n=64, reps=3) == 2 * 64 ** 3 / 1e9


def test_flop_counter_counts_fused_lstm_as_its_gemms():
    """Known answer: an LSTM(I, H) over (B, T) is 2·B·T·4H·(I+H) FLOP forward and twice that backward, on the
    fused oneDNN kernel as on the unfused path (whose mm/addmm torch's counter sees by itself)."""
    from benchmark import roofline
    B, T, I, H = 4, 7, 12, 16
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H, batch_first=True, bidirectional=True)
    x = torch.randn(B, T, I, requires_grad=True)

    def count(fused: bool) -> int:
        with torch.backends.mkldnn.flags(enabled=fused), roofline.flop_counter() as fc:
            lstm(x)[0].sum().backward()
        return fc.get_total_flops()

    per_direction = 2 * B * T * 4 * H * (I + H)
    assert count(True) == 3 * 2 * per_direction
    # the unfused backward skips the gradient into h_0 (no grad wanted): one recurrent GEMM fewer per direction
    assert count(False) == 3 * 2 * per_direction - 2 * 2 * B * 4 * H * H
