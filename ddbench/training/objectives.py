"""What the student learns from a (mixed) batch: hard labels, or a frozen teacher's soft labels."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddbench.core.device import autocast
from ddbench.models.inference import inference_model
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
    """The teacher labels the very batch the student sees (after augmentation and CutMix).

    The batch arrives normalised for the student (`student_normalization`, (mean, std)); a
    teacher trained with other constants (`teacher_normalization`) gets the same pixels
    normalised its own way. None for either: both use the same constants."""

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float,
        device: torch.device,
        amp: bool = True,
        student_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        teacher_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    ):
        self.teacher = teacher
        self.frozen_teacher: nn.Module | None = None
        self.temperature = temperature
        self.device = device
        self.amp = amp
        self.renormalize = None
        if student_normalization is not None and teacher_normalization is not None:
            if tuple(map(tuple, student_normalization)) != tuple(map(tuple, teacher_normalization)):
                self.renormalize = Renormalize(*student_normalization, *teacher_normalization)

    def teacher_inputs(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.renormalize is None else self.renormalize(images)

    def __call__(self, student_logits: torch.Tensor, batch: MixedBatch) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.amp):
            inputs = self.teacher_inputs(batch.images)
            if self.frozen_teacher is None:  # the teacher never changes: frozen once (`models.inference`)
                self.frozen_teacher = inference_model(self.teacher, inputs)
            teacher_logits = self.frozen_teacher(inputs)
        return soft_label_kl(student_logits, teacher_logits, self.temperature)


class Renormalize:
    """Images normalised with (from_mean, from_std) -> the same pixels normalised with (to_mean,
    to_std): x * from_std / to_std + (from_mean - to_mean) / to_std, per channel."""

    def __init__(self, from_mean: Sequence[float], from_std: Sequence[float], to_mean: Sequence[float], to_std: Sequence[float]):
        from_mean, from_std = torch.tensor(from_mean, dtype=torch.float64), torch.tensor(from_std, dtype=torch.float64)
        to_mean, to_std = torch.tensor(to_mean, dtype=torch.float64), torch.tensor(to_std, dtype=torch.float64)
        self.scale = (from_std / to_std).view(1, -1, 1, 1)
        self.shift = ((from_mean - to_mean) / to_std).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        scale = self.scale.to(images.device, images.dtype)
        shift = self.shift.to(images.device, images.dtype)
        return images * scale + shift
