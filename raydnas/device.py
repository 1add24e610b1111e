"""The device a run uses: ``auto`` (CUDA when there is one, else the CPU) or a named one.

In a Ray Tune trial ``auto`` is the trial's assigned GPU: Ray sets ``CUDA_VISIBLE_DEVICES`` to
it, so ``cuda`` is that GPU and nothing here names a device index of its own.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError("--device", "device", device, "auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError("--device", "device", device,
                          f"a visible CUDA device ({torch.cuda.device_count()} visible); "
                          "use cpu or auto")
    return dev
