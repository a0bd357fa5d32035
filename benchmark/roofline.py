"""What this device can do, measured in the same process as the thing being timed: a GEMM probe per
precision (the roofline a speed is a fraction of, comparable across machines) and an operator profile
(where a step's time goes). `bench` reports both."""
from __future__ import annotations

import math
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


def _tokens(input_shape) -> int:
    """Time steps × batch of an RNN input: (B, T, F), (T, B, F), or packed (sum of batch sizes, F)."""
    return math.prod(input_shape[:-1])


def _rnn_gemm_flops(input_shape, weight_shapes) -> int:
    """2 FLOP per multiply-add of each weight matrix (w_ih, w_hh; biases and gates' pointwise math left out,
    as for Linear) at every time step of every sequence."""
    return 2 * _tokens(input_shape) * sum(math.prod(w) for w in weight_shapes if w is not None and len(w) == 2)


# torch's FlopCounterMode has no formula for the fused RNN kernels, so an LSTM counted as 0 FLOP and every model
# with one (all of ours: q(z_t), the prior, DSVAE's BiLSTM) was under-counted: speech's step by most of its work.
# Forward: the input and recurrent GEMMs per step; backward: twice that (the gradients of the inputs and of the
# weights) — the same totals as the unfused path's mm/addmm, which the counter does see (a test compares them).
def _mkldnn_rnn(input, weight0, weight1, *args, out_shape=None, **kwargs) -> int:
    return _rnn_gemm_flops(input, (weight0, weight1))


def _mkldnn_rnn_backward(input, weight1, weight2, *args, out_shape=None, **kwargs) -> int:
    return 2 * _rnn_gemm_flops(input, (weight1, weight2))


def _cudnn_rnn(input, weight, *args, out_shape=None, **kwargs) -> int:
    return _rnn_gemm_flops(input, weight)


def _cudnn_rnn_backward(input, weight, *args, out_shape=None, **kwargs) -> int:
    return 2 * _rnn_gemm_flops(input, weight)


RNN_FLOP_FORMULAS = {torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn,
                     torch.ops.aten.mkldnn_rnn_layer_backward: _mkldnn_rnn_backward,
                     torch.ops.aten._cudnn_rnn: _cudnn_rnn,
                     torch.ops.aten._cudnn_rnn_backward: _cudnn_rnn_backward}


def flop_counter():
    """torch's FlopCounterMode with the fused RNN kernels counted (what `bench` divides by time)."""
    from torch.utils.flop_counter import FlopCounterMode
    return FlopCounterMode(display=False, custom_mapping=RNN_FLOP_FORMULAS)


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
