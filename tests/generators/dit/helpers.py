"""Tiny seeded DiT models and inputs shared by the DiT tests (and the out-of-repo recording script)."""

from __future__ import annotations

import math

import torch

from ddbench.core.seeding import torch_generator
from ddbench.generators.dit.config import DiTConfig
from ddbench.generators.dit.model import DiT

#: the plain model: compared with facebookresearch/DiT's models.py (no gammas)
PLAIN = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=5,
                  gamma_blocks=0)
#: the Minimax model: compared with vimar-gu/MinimaxDiffusion's models.py (gammas on blocks 0-13 of 16)
MINIMAX = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=16, num_heads=2, num_classes=5)


def randomise(model: DiT, seed: int) -> DiT:
    """Every parameter but the fixed pos_embed drawn from a seeded generator: matrices ~ N(0, 1/fan_in),
    vectors ~ N(0, 0.05^2), gammas ~ 1 + N(0, 0.1^2), the label table ~ N(0, 0.5^2)."""
    generator = torch_generator(seed, "dit-test-randomise")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name == "pos_embed":
                continue
            noise = torch.randn(parameter.shape, generator=generator)
            if "gamma" in name:
                parameter.copy_(1 + 0.1 * noise)
            elif "embedding_table" in name:
                parameter.copy_(0.5 * noise)
            elif parameter.ndim >= 2:
                parameter.copy_(noise / math.sqrt(parameter[0].numel()))
            else:
                parameter.copy_(0.05 * noise)
    return model.eval()


def tiny_model(config: DiTConfig, seed: int) -> DiT:
    return randomise(DiT(config), seed)


def reference_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (3, 4, 8, 8), timesteps, labels (the last one the null class 5)."""
    x = torch.randn(3, 4, 8, 8, generator=torch_generator(1, "dit-test-x"))
    return x, torch.tensor([0, 417, 999]), torch.tensor([0, 3, 5])


def trajectory_noise(batch: int, steps: int = 50) -> list[torch.Tensor]:
    """The noise the recording fed the official p_sample_loop: start (B, 4, 8, 8), then (2B, 4, 8, 8) per step
    (the official loop draws for the whole doubled batch; only the first half reaches the images)."""
    generator = torch.Generator().manual_seed(1234)
    noise = [torch.randn(batch, 4, 8, 8, generator=generator)]
    noise += [torch.randn(2 * batch, 4, 8, 8, generator=generator) for _ in range(steps)]
    return noise


def minimax_batches() -> list[dict]:
    """Four fine-tuning batches: subset class ids, latents, timesteps and noise (seeded)."""
    class_ids = [[0, 0, 1, 2], [1, 0, 1, 1], [2, 2, 0, 1], [0, 1, 2, 0]]
    generator = torch.Generator().manual_seed(99)
    batches = []
    for ids in class_ids:
        batches.append({"class_ids": torch.tensor(ids), "latents": torch.randn(4, 4, 8, 8, generator=generator),
                        "t": torch.randint(0, 1000, (4,), generator=generator),
                        "noise": torch.randn(4, 4, 8, 8, generator=generator)})
    return batches


#: subset class id -> generator label (as Minimax's woof ids map to ImageNet indices)
MINIMAX_LABEL_MAP = [4, 1, 2]
MINIMAX_MEMORY = 3


#: a small model for the training tests (DiT training and the Minimax fine-tune)
TRAIN_TINY = DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=3)


def tiny_image_set(count: int = 18):
    """`count` seeded random 8 px RGB images, labels 0, 1, 2, 0, ..."""
    import numpy as np

    from ddbench.core.images import ArrayImageDataset

    rng = np.random.default_rng(0)
    return ArrayImageDataset(rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8), [i % 3 for i in range(count)])


def offline_error_lines(cli, tmp_path, methods, ipc: int, marker: str = "HF_HUB_OFFLINE") -> dict[str, list[str]]:
    """Each method's output lines naming `marker` when it runs on a tiny woof tree with HF_HUB_OFFLINE
    set (the caller sets it) and no DiT weights in the cache; every run must fail."""
    from ddbench.datasets.imagenet import ImageWoof
    from tests.datasets.tiny_trees import make_wnid_tree

    root = make_wnid_tree(tmp_path / "imagewoof2", ImageWoof.wnids, train=2, val=1, size=(12, 10))
    lines = {}
    for method in methods:
        result = cli("run", "--method", method, "--dataset", "woof", "--ipc", str(ipc), "--data-root", str(root),
                     "--evaluator", "hard_label", "--device", "cpu")
        assert result.exit_code != 0, method
        lines[method] = [line for line in result.output.splitlines() if marker in line]
    return lines
