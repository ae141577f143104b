"""Pinned per-step losses of tiny seeded VQ-VAE and VAR trainings.

Recorded before VAR training moved onto the shared training base (`ddbench.training`), so that move
(and any later change to the base) cannot silently change what the training computes, which would
make the shipped digits weights irreproducible. Each step's metrics come from a run stopped after
that step (the loss of step k is computed before step k's update); a failure here means the
training function changed: rebuild the shipped weights and re-pin only if that was intended.
The tolerance (rtol 1e-4) covers BLAS kernels that differ between CPUs (seen: 1.5e-5 at step 3);
a change of the training function moves these losses by far more.
"""

from __future__ import annotations

import numpy as np

from ddbench.generators.var.training import train_var, train_vqvae
from tests.generators.test_var_training import TINY_PRESET, _synthetic_set

# (reconstruction_loss, vq_loss) of steps 1..4
VQVAE_PINS = [(1.0025298595428467, 0.1519635021686554), (0.7041017413139343, 0.16205701231956482),
              (0.5988415479660034, 0.18123923242092133), (0.46613049507141113, 0.17799806594848633)]
# (token_loss, token_accuracy) of steps 1..4
VAR_PINS = [(4.157787322998047, 0.0), (4.108719348907471, 0.24166665971279144),
            (3.9917571544647217, 0.40416666865348816), (3.867117166519165, 0.4416666626930237)]


def stepwise(train, keys: tuple[str, str], steps: int = 4) -> list[tuple[float, float]]:
    summaries = [train(stop_after) for stop_after in range(1, steps + 1)]
    return [tuple(summary[key] for key in keys) for summary in summaries]


def test_vqvae_and_var_training_compute_the_pinned_losses(tmp_path):
    data = _synthetic_set()
    vqvae = stepwise(lambda k: train_vqvae(TINY_PRESET, data, data, tmp_path / "vqvae", stop_after=k),
                     ("reconstruction_loss", "vq_loss"))
    np.testing.assert_allclose(vqvae, VQVAE_PINS, rtol=1e-4, atol=1e-6)
    var = stepwise(lambda k: train_var(TINY_PRESET, data, tmp_path / "vqvae" / "vqvae.pth", tmp_path / "var", stop_after=k),
                   ("token_loss", "token_accuracy"))
    np.testing.assert_allclose(var, VAR_PINS, rtol=1e-4, atol=1e-6)
