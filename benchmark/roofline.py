"""What this device can do, measured in the same process as the thing being timed: a GEMM probe per
precision (the roofline a speed is a fraction of, comparable across machines) and an operator profile
(where a step's time goes). `bench` reports both."""
from __future__ import annotations

import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_gflops(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", n: int | None = None,
                reps: int = 5) -> float:
    """Best-of-`reps` GFLOP/s of one n×n @ n×n matmul (2n³ FLOP): the device's dense-math ceiling for
    `dtype` with the current thread count. Best, not mean: the ceiling is what the hardware can reach."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(2):  # warm-up: thread pool, oneDNN / cuBLAS kernel selection
        torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def has_bf16_units(device: torch.device) -> bool:
    from benchmark.trainer import cpu_has_bf16_units
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16_units()


def roofline(device: str | torch.device = "cpu") -> dict[str, float | None]:
    """{precision: GEMM GFLOP/s}: fp32 always; bf16 only where the device has bf16 units (an emulated
    bf16 GEMM is not a ceiling anyone should be measured against)."""
    device = torch.device(device)
    return {"fp32": gemm_gflops(torch.float32, device),
            "bf16": gemm_gflops(torch.bfloat16, device) if has_bf16_units(device) else None}


def top_ops(fn, device: str | torch.device = "cpu", n: int = 15) -> list[dict]:
    """The `n` operators with the most self time while `fn()` runs (torch.profiler): name, calls,
    self milliseconds and share of the profiled self time, on the device's own clock."""
    from torch.profiler import ProfilerActivity, profile
    device = torch.device(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        _sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, attr) / 1e3, "share": getattr(e, attr) / total}
            for e in events[:n]]


def ops_markdown(ops: list[dict], title: str) -> str:
    lines = [f"{title}", "", "| operator | calls | self ms | share |", "|---|---|---|---|"]
    lines += [f"| `{o['op']}` | {o['calls']} | {o['self_ms']:.1f} | {100 * o['share']:.1f} % |" for o in ops]
    return "\n".join(lines)
