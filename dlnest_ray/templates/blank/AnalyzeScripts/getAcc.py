"""Prints and returns the validation accuracy of the loaded checkpoint."""


def experience(self):
    correct, total = self.model.evaluate(self.dataset.val_loader)
    acc = correct / max(total, 1)
    print(f"Accuracy: {acc:.4f} ({correct}/{total})")
    return acc
