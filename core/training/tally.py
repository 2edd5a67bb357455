"""An epoch's running loss and accuracy, summed where the logits are.

Reading a GPU tensor on the host (``.item()``) waits until the GPU has finished
everything queued before it: the trainer used to read the loss and the correct count of
every slice and every validation batch, so the host stood still twice per step and the
GPU ran dry while the next batch was prepared.  Here the sums stay on the device and
are read once, when the epoch (or the validation pass) ends.

The numbers are the same as before, to the last bit: the loss is summed in float64 in
the same order (slices into their batch, batches into the epoch), as the Python floats
were, and correct counts are exact integers.  (MPS has no float64: float32 there.)
"""
from __future__ import annotations

import torch


class Tally:
    def __init__(self, device: torch.device):
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.loss = torch.zeros((), dtype=self.dtype, device=device)      # sum of loss x images
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0  # images: known on the host without asking the device

    def slice(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
              batch_loss: torch.Tensor | None = None) -> torch.Tensor:
        """Count one slice's correct predictions; returns the batch's loss sum so far."""
        self.correct += (logits.detach().argmax(1) == y).sum()
        part = loss.detach().to(self.dtype) * y.shape[0]
        return part if batch_loss is None else batch_loss + part

    def batch(self, batch_loss: torch.Tensor, n: int) -> None:
        """Close a batch of ``n`` images whose slices summed to ``batch_loss``."""
        self.loss += batch_loss
        self.seen += n

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """A batch in one piece (validation)."""
        self.batch(self.slice(loss, logits, y), y.shape[0])

    def totals(self) -> tuple[float, float, int]:
        """(loss sum, correct, images): the one read from the device."""
        loss, correct = torch.stack([self.loss, self.correct.to(self.dtype)]).tolist()
        return loss, correct, self.seen
