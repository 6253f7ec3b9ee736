"""Where a model runs: ``device="auto"`` and checks that a requested device exists on this machine."""

from __future__ import annotations

import torch

AUTO = "auto"


def auto_device() -> torch.device:
    """CUDA if available, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _available() -> str:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return ", ".join(["auto", *names])


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The ``torch.device`` for ``device`` ("auto"/None = :func:`auto_device`), checked to exist here.

    An unparsable name, a CUDA device on a machine without CUDA (or past its device count) and MPS
    where it is unavailable raise ``ValueError`` naming ``device`` and listing what is available.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == AUTO):
        return auto_device()
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device: expected 'auto', a device name such as 'cpu' or 'cuda:0', or a torch.device, "
                        f"got {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"device: {device!r} is not a device name (available here: {_available()})") from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asks for CUDA, which is not available on this machine "
                             f"(available here: {_available()})")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s) (available here: {_available()})")
        return resolved
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device: {device!r} asks for MPS, which is not available on this machine "
                             f"(available here: {_available()})")
        return resolved
    raise ValueError(f"device: {device!r} is not supported (available here: {_available()})")


def check_n_devices(n_devices: int, device: torch.device) -> int:
    """``n_devices`` for TransformerLens' layer split: 1, or up to the number of CUDA devices."""
    if not isinstance(n_devices, int) or isinstance(n_devices, bool) or n_devices < 1:
        raise ValueError(f"n_devices: expected a positive int, got {n_devices!r}")
    if n_devices == 1:
        return 1
    if device.type != "cuda":
        raise ValueError(f"n_devices: splitting a model over {n_devices} devices needs CUDA devices, "
                         f"but the model is placed on {device}")
    if n_devices > torch.cuda.device_count():
        raise ValueError(f"n_devices: {n_devices} requested but this machine has {torch.cuda.device_count()} "
                         "CUDA device(s)")
    return n_devices
