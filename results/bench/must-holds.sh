#!/usr/bin/env bash
# Issue 16's must-holds on this machine's CPU, in one sitting (~15 min on a quiet 2-core CPU):
#   1. paper step, fp32, every sprites model, as a fraction of the same-process GEMM roofline;
#   2. sprites' whole test split (2 sides x 3 passes) at the cpu profile: seconds and fraction of the roofline;
#   3. speech S3VAE step, fast vs plain path interleaved in one process (separate processes drift +-30 %).
# Files are named by the CPU's widest vector unit (avx2 / avx512 / amx, or avx2cap under ISA_CAP=avx2) and the date,
# so runs on the CPUs that sessions get sit side by side. Run it from a clean checkout on a quiet CPU: nothing
# else CPU-heavy at the same time (two cores; OpenMP contention reads as a slow model).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "must-holds.sh: the checkout has uncommitted changes; the rows' git_commit would not describe the code" >&2
  exit 2
fi
if grep -qw amx_tile /proc/cpuinfo; then isa=amx; elif grep -qw avx512f /proc/cpuinfo; then isa=avx512; else isa=avx2; fi
# ISA_CAP=avx2 runs every kernel (ATen, oneDNN, MKL) at AVX2 on a wider CPU: the AVX2 must-holds' kernels and their
# same-ISA GEMM roofline, on a machine whose caches and clocks are not an AVX2 part's (files say "avx2cap").
case "${ISA_CAP:-}" in
  "") ;;
  avx2) export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2; isa=avx2cap ;;
  *) echo "must-holds.sh: ISA_CAP=$ISA_CAP: expected avx2 or unset" >&2; exit 2 ;;
esac
tag="$isa-$(date -u +%Y%m%d)"
out=results/bench
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($isa); files $out/*-$tag.*" >&2
python -m benchmark bench --model s3vae,baseline,dsvae,mocogan --dataset sprites --profile paper \
  --precision fp32 --steps 5 --warmup 2 --out "$out/paper-$tag.json"
python -m benchmark bench --model s3vae --dataset sprites --profile cpu --precision fp32 --steps 2 --warmup 1 \
  --eval --max-sequences 0 --profile-ops 8 --out "$out/cpu-eval-full-$tag.json"
python "$out/ab-speech-step/ab.py" s3vae speech 16 "$out/ab-speech-step/s3vae-speech-b16-$tag.json"
echo "done: compare fraction_of_roofline (paper step >= 0.70 for s3vae, >= 0.60 the others; eval >= 0.5)," \
     "the eval row's step_s (<= 120 s) and the speech speed-up in the ab JSON" >&2
