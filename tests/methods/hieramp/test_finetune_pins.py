"""Pinned per-step losses of a tiny seeded class-token fine-tune.

Recorded before HIERAMP fine-tuning moved onto the shared training base (`ddbench.training`), so
the move cannot silently change what it computes (the shipped digits class-token VAR depends on
it). Each step's metrics come from a run stopped after that step.
"""

from __future__ import annotations

import numpy as np

from ddbench.methods.hieramp.finetune import FinetuneConfig, finetune_class_tokens
from tests.methods.hieramp.helpers import save_checkpoints, tiny_plain
from tests.methods.hieramp.test_method import TwoColours

# (token_loss, class_loss) of steps 1..4
FINETUNE_PINS = [(32.65670394897461, 0.7770292162895203), (24.86207389831543, 0.6702601313591003),
                 (20.009197235107422, 0.7646446824073792), (17.18482208251953, 0.6838039755821228)]


def test_class_token_finetune_computes_the_pinned_losses(tmp_path):
    plain, vqvae = tiny_plain(num_classes=2)
    _, vqvae_path = save_checkpoints(tmp_path / "ckpt", plain, vqvae)
    config = FinetuneConfig(epochs=4 * 8 / 48, batch_size=8, checkpoint_every=2)  # 4 steps over 48 images
    train = TwoColours().split("train")
    losses = []
    for stop_after in range(1, 5):
        summary = finetune_class_tokens(plain.state_dict(), vqvae_path, train, tmp_path / "run", config=config,
                                        stop_after=stop_after)
        losses.append((summary["token_loss"], summary["class_loss"]))
    np.testing.assert_allclose(losses, FINETUNE_PINS, rtol=1e-5, atol=1e-7)
