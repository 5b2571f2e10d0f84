"""What the benchmarks share about their device (``--device {cpu,cuda}``)."""

from __future__ import annotations

import sys

import torch

__all__ = ["cuda_sync", "describe", "require"]


def cuda_sync(device: str) -> None:
    """Wait for the GPU's queued work (timings on CUDA are asynchronous)."""
    if device == "cuda":
        torch.cuda.synchronize()


def describe(device: str) -> str:
    """The device as a header line names it."""
    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)}, torch {torch.__version__})"
    return f"cpu (torch {torch.__version__})"


def require(device: str, prog: str) -> None:
    """``--device cuda`` without CUDA: one line on stderr, exit status 2."""
    if device == "cuda" and not torch.cuda.is_available():
        print(
            f"{prog}: error: --device cuda: CUDA is not available to torch {torch.__version__}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)
