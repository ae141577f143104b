"""What the student learns from a (mixed) batch: hard labels, or a frozen teacher's soft labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddbench.core.device import autocast
from ddbench.training.augment import MixedBatch


def soft_label_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """RDED's loss: KL(softmax(t/T) || softmax(s/T)) averaged over the batch ("batchmean"),
    without the T^2 factor of classic distillation and without a hard-label term."""
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher_probs = F.softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(student_log_probs, teacher_probs, reduction="batchmean")


class HardLabelObjective:
    """Cross-entropy on the true labels, split by lambda when the batch was CutMixed."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, student_logits: torch.Tensor, batch: MixedBatch) -> torch.Tensor:
        logits = student_logits.float()
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing)
        if batch.lam < 1.0:
            partner = F.cross_entropy(logits, batch.partner_labels, label_smoothing=self.label_smoothing)
            loss = batch.lam * loss + (1.0 - batch.lam) * partner
        return loss


class TeacherSoftLabelObjective:
    """The teacher labels the very batch the student sees (after augmentation and CutMix)."""

    def __init__(self, teacher: nn.Module, temperature: float, device: torch.device, amp: bool = True):
        self.teacher = teacher
        self.temperature = temperature
        self.device = device
        self.amp = amp

    def __call__(self, student_logits: torch.Tensor, batch: MixedBatch) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.amp):
            teacher_logits = self.teacher(batch.images)
        return soft_label_kl(student_logits, teacher_logits, self.temperature)
