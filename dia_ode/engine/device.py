"""Where a run computes, and how much memory it took."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" to a torch.device; "cuda" without a GPU raises ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{name}'; valid: auto, cpu, cuda")
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: torch's allocator on CUDA; on CPU, where torch has no such counter, the process's
    peak resident set (interpreter, libraries and data included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
