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


def test_isa_cap_turns_off_bf16_units_and_is_recorded(monkeypatch):
    """Under ONEDNN_MAX_CPU_ISA=AVX2 (must-holds.sh's ISA_CAP=avx2) bf16 would be emulated: no bf16 roofline, auto
    precision fp32; the caps and ATen's dispatch level are in the hardware record beside the CPU flags."""
    from benchmark import trainer
    from benchmark.tables import hardware
    monkeypatch.setattr(trainer.Path, "read_text", lambda self, *a, **k: "flags : fpu avx2 avx512f avx512_bf16\n"
                        "model name : Some CPU\n")
    for var in trainer.ISA_CAP_VARS:
        monkeypatch.delenv(var, raising=False)
    assert trainer.cpu_has_bf16_units() and hardware()["isa_caps"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    assert not trainer.cpu_has_bf16_units()
    assert trainer.resolve_precision("auto", torch.device("cpu")) == "fp32"
    hw = hardware()
    assert hw["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert hw["cpu_model"] == "Some CPU" and hw["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # a cap above bf16 keeps the units
    assert trainer.cpu_has_bf16_units()
