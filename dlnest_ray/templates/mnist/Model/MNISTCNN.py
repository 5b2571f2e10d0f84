"""The network: two 3x3 convolutions, one max-pool, two linear layers (DLNest's MNIST model)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MNISTCNN(nn.Module):
    def __init__(self, config: dict[str, Any], num_classes: int = 10) -> None:
        super().__init__()
        c1, c2 = config["channels"]
        hidden = config["hidden"]
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28x28 -> 14x14
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(14 * 14 * c2, hidden),
            nn.ReLU(),
            nn.Dropout(config["dropout"]),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, 1, 28, 28]`` images; returns ``[N, num_classes]`` logits."""
        return self.classifier(self.features(x))
