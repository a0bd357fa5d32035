"""Every random stream derives from one master seed."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive(seed: int, *tags) -> int:
    """A child seed for a named stream (e.g. data order of epoch 3), stable across runs."""
    import hashlib
    h = hashlib.sha256(repr((seed,) + tags).encode()).digest()
    return int.from_bytes(h[:8], "little") % (2**63)


def rng_state() -> dict:
    """Every generator's state as tensors and plain values, so checkpoints load with weights_only=True."""
    return portable_rng_state({"python": random.getstate(), "numpy": np.random.get_state(),
                               "torch": torch.get_rng_state(),
                               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})


def portable_rng_state(state: dict) -> dict:
    """numpy's (name, uint32 keys, pos, has_gauss, cached) with the keys as an int64 tensor."""
    name, keys, *rest = state["numpy"]
    if isinstance(keys, np.ndarray):
        keys = torch.from_numpy(keys.astype(np.int64))
    return {**state, "numpy": (name, keys, *(v.item() if isinstance(v, np.generic) else v for v in rest))}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
