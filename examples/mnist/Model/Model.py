"""Trains MNISTCNN with Adam and a step LR schedule; validation records the accuracy."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlnest_ray import ModelBaseTorch
from MNISTCNN import MNISTCNN  # a sibling file: the framework puts this folder on sys.path


class Model(ModelBaseTorch):
    def init(self, args: dict[str, Any], dataset_info: dict[str, Any]) -> None:
        # Assigning modules to self registers them: moved to the device, DDP-wrapped, checkpointed.
        self.net = MNISTCNN(args["model_config"], num_classes=dataset_info["num_classes"])
        self.loss_fn = nn.CrossEntropyLoss()

    def init_log(self) -> dict[str, Any]:
        return {"loss": [], "acc": []}

    def init_optimizer(self) -> None:
        # Runs after the networks were moved and wrapped, so the optimizer sees the final parameters.
        cfg = self.args["model_config"]
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg["lr"])
        # Stepped once per epoch by LifeCycle.before_save_model.
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg["lr_step"], gamma=cfg["lr_gamma"]
        )

    def run_one_step(self, data: Any, log: dict[str, Any], iter: int, epoch: int) -> None:
        x, y = data  # already on self.device
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.net(x), y)
        loss.backward()
        self.optimizer.step()
        # The mean over DDP ranks, so every rank logs the same number (identity without DDP).
        log["loss"].append(self.reduce_mean(loss.detach()).item())

    def visualize(self, epoch: int, iter: int, log: dict[str, Any]) -> None:
        recent = log["loss"][-100:]
        if recent:
            print(
                f"Epoch {epoch} iter {iter} | mean loss of the last {len(recent)} steps "
                f"{sum(recent) / len(recent):.4f}"
            )

    def evaluate(self, loader: Any) -> tuple[int, int]:
        """(correct, total) over ``loader``, summed over all DDP ranks.

        Under DDP every rank must call this (it all-reduces). A DistributedSampler pads the last shard
        when the dataset size is not a multiple of the world size, so a few samples may count twice.
        """
        was_training = self.net.training
        self.net.eval()  # dropout off
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        total = torch.zeros((), dtype=torch.long, device=self.device)
        try:
            with torch.no_grad():
                for x, y in loader:
                    # Validation batches are not moved by the framework.
                    x, y = x.to(self.device), y.to(self.device)
                    correct += (self.net(x).argmax(dim=1) == y).sum()
                    total += y.numel()
        finally:
            self.net.train(was_training)
        return int(self.reduce_sum(correct).item()), int(self.reduce_sum(total).item())

    def validate(self, val_loader: Any, log: dict[str, Any]) -> None:
        correct, total = self.evaluate(val_loader)
        acc = correct / max(total, 1)
        log["acc"].append(acc)
        if self.status.is_main:
            print(f"Epoch {self.status.epoch} | val acc {acc:.4f} ({correct}/{total})")
