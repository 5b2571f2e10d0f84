"""The network: a small MLP. Replace it with yours (or add more files and list them in root_config.json's
other_file_paths, so they are copied into every run's save package)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Network(nn.Module):
    def __init__(self, config: dict[str, Any], num_features: int, num_classes: int) -> None:
        super().__init__()
        hidden = config["hidden"]
        self.layers = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, num_features]``; returns ``[N, num_classes]`` logits."""
        return self.layers(x)
