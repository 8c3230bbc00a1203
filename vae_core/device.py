"""Choosing the device: cuda, then mps, then cpu, unless the caller names one."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; any other name is checked and used as given."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {name!r} was asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {name!r} was asked for, but MPS is not available here")
    if device.type == "cpu":
        # Denormal floats make CPU matmuls many times slower near convergence; flush them to zero.
        torch.set_flush_denormal(True)
    return device
