"""Decides when to validate, save, print and stop; keeps the best checkpoint in the consistent track."""

from __future__ import annotations

from typing import Any

from dlnest_ray import LifeCycleBase


class LifeCycle(LifeCycleBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, not in before_all: on resume load_save_dict restores it after before_all has run.
        self.max_acc = 0.0

    def need_visualize(self, epoch: int, iter: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        return False  # e.g. `iter % 100 == 0` to call Model.visualize every 100 steps

    def need_validation(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        return True

    def command_line_output(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> None:
        # Runs right after the epoch's training, before validation (Model.validate prints the accuracy).
        if not self.status.is_main:
            return
        steps = len(self.dataset.train_loader)
        recent = log["loss"][-steps:]
        loss = sum(recent) / max(len(recent), 1)
        lr = self.model.optimizer.param_groups[0]["lr"]
        print(f"Epoch {epoch} | loss {loss:.4f} | lr {lr:.6f}")

    def need_save_model(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        return True

    def hold_this_checkpoint(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        # Hold the best-accuracy checkpoint in the consistent track.
        if log["acc"] and log["acc"][-1] > self.max_acc:
            self.max_acc = log["acc"][-1]
            return True
        return False

    def before_save_model(self) -> None:
        # Step the LR schedule once per epoch. This hook runs every epoch, saving or not, after training
        # and validation but before the checkpoint is captured, so a resumed run goes on with the right
        # LR (after_one_epoch runs after the capture: stepping there would repeat an LR on resume).
        self.model.scheduler.step()

    def need_continue_train(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        # Epochs count from 0, so this runs exactly args["epochs"] epochs.
        return epoch + 1 < args["epochs"]

    def get_save_dict(self) -> dict[str, Any]:
        return {"max_acc": self.max_acc}

    def load_save_dict(self, save_dict: dict[str, Any]) -> None:
        self.max_acc = save_dict.get("max_acc", 0.0)
