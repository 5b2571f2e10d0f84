"""Trains Network with Adam; validation records the accuracy. Replace the bodies, keep the method names."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlnest_ray import ModelBaseTorch
from Network import Network  # a sibling file: the framework puts this folder on sys.path


class Model(ModelBaseTorch):
    def init(self, args: dict[str, Any], dataset_info: dict[str, Any]) -> None:
        # Build your networks here. Assigning a module to self registers it: moved to the device,
        # DDP-wrapped under DDP, saved in checkpoints.
        self.net = Network(args["model_config"], dataset_info["num_features"], dataset_info["num_classes"])
        self.loss_fn = nn.CrossEntropyLoss()

    def init_log(self) -> dict[str, Any]:
        # Everything you want recorded; the life cycle reads it to decide what to do.
        return {"loss": [], "acc": []}

    def init_optimizer(self) -> None:
        # Runs after the networks were moved and wrapped. Optimizers and schedulers assigned to self are
        # checkpointed too. The scheduler is stepped once per epoch by LifeCycle.before_save_model.
        cfg = self.args["model_config"]
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg["lr"])
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg["lr_step"], gamma=cfg["lr_gamma"]
        )

    def run_one_step(self, data: Any, log: dict[str, Any], iter: int, epoch: int) -> None:
        # One training step on one batch (already moved to self.device).
        x, y = data
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.net(x), y)
        loss.backward()
        self.optimizer.step()
        # The mean over DDP ranks, so every rank logs the same number (identity without DDP).
        log["loss"].append(self.reduce_mean(loss.detach()).item())

    def visualize(self, epoch: int, iter: int, log: dict[str, Any]) -> None:
        # Called when LifeCycle.need_visualize says so: print, plot, write to TensorBoard...
        recent = log["loss"][-100:]
        if recent:
            print(
                f"Epoch {epoch} iter {iter} | mean loss of the last {len(recent)} steps "
                f"{sum(recent) / len(recent):.4f}"
            )

    def evaluate(self, loader: Any) -> tuple[int, int]:
        """(correct, total) over ``loader``, summed over all DDP ranks (so every rank must call it)."""
        was_training = self.net.training
        self.net.eval()
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
        # Runs on every rank when LifeCycle.need_validation says so; record results in the log.
        correct, total = self.evaluate(val_loader)
        acc = correct / max(total, 1)
        log["acc"].append(acc)
        if self.status.is_main:
            print(f"Epoch {self.status.epoch} | val acc {acc:.4f} ({correct}/{total})")
