"""The shared running status handed to the model, dataset and life cycle (DLNest's RunningStatus).

Besides its PEP 8 fields it answers DLNest 0.3's names: ``worldSize``, ``status`` (the phase),
``isTraining()``, ``isValidating()``, ``isAnalyzing()``, ``isWaiting()`` and ``startTraining()`` &c.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["EnvType", "Phase", "RunningStatus"]


class EnvType(str, Enum):
    """How a process runs: DLNest's ``_envType`` strings."""

    CPU = "CPU"
    GPU = "GPU"
    GPUS = "GPUs"  # several GPUs in one process: the model's own DataParallel
    DDP = "DDP"

    def __str__(self) -> str:
        return self.value


class Phase(str, Enum):
    TRAINING = "Training"
    VALIDATING = "Validating"
    ANALYZING = "Analyzing"
    WAITING = "Waiting"


@dataclass(kw_only=True)
class RunningStatus:
    """Where and at what point the process is. One instance is shared by model, dataset and life cycle.

    ``rank`` is -1 outside DDP (as in DLNest); use :attr:`is_main` to ask "am I the writing process".
    """

    env: EnvType = EnvType.CPU
    device: Any = None  # torch.device; Any so this module stays torch-free
    rank: int = -1
    local_rank: int = -1
    world_size: int = 1
    epoch: int = 0
    iter: int = 0
    global_step: int = 0
    phase: Phase = Phase.WAITING

    @property
    def is_main(self) -> bool:
        return self.rank <= 0

    @property
    def is_ddp(self) -> bool:
        return self.env is EnvType.DDP

    def torch_device(self) -> Any:
        """The run's ``torch.device`` (the CPU until a device is chosen)."""
        import torch

        return self.device if self.device is not None else torch.device("cpu")

    # DLNest 0.3's RunningStatus API
    @property
    def worldSize(self) -> int:
        return self.world_size

    @property
    def status(self) -> Phase:
        return self.phase

    def isTraining(self) -> bool:
        return self.phase is Phase.TRAINING

    def isValidating(self) -> bool:
        return self.phase is Phase.VALIDATING

    def isAnalyzing(self) -> bool:
        return self.phase is Phase.ANALYZING

    def isWaiting(self) -> bool:
        return self.phase is Phase.WAITING

    def startTraining(self) -> None:
        self.phase = Phase.TRAINING

    def startValidating(self) -> None:
        self.phase = Phase.VALIDATING

    def startAnalyzing(self) -> None:
        self.phase = Phase.ANALYZING

    def startWaiting(self) -> None:
        self.phase = Phase.WAITING
