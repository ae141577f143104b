"""ddbench's DiT in its "diffusers" variant computes diffusers' `DiTTransformer2DModel` as shipped (the
function D3HR's release runs): the same seeded tiny weights, loaded both ways, give the same output, and
each of the two differences alone (frequency shift, MLP-norm eps) is far above the arithmetic noise.

Measured (2-core x86 CPU, outputs up to |4|): float32 against float64 differs by 1.3e-6 (the noise of
float32 itself); ours and diffusers' in float32 differ by 0 here; in float64 by < 1e-14. A wrong eps
alone moves the output by 1.6e-5 (the eps only matters where the MLP input's variance is small), a wrong
shift by 0.08 to 1.5, the official variant by 1.5. So float64 compares at 1e-10 and float32 at 4e-6."""

from __future__ import annotations

import pytest
import torch

from ddbench.generators.dit.loading import load_dit
from ddbench.generators.dit.model import VARIANTS

TOLERANCE_64 = 1e-10  # 1e4 above the float64 noise, 1e5 below a wrong eps
TOLERANCE_32 = 4e-6  # 3x the float32 noise, 4x below a wrong eps


def tiny_diffusers(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                                            num_layers=3, sample_size=8, patch_size=2, num_embeds_ada_norm=5)
    with torch.no_grad():
        for parameter in model.parameters():  # the adaLN and output layers must matter: no zeros
            parameter.add_(torch.randn_like(parameter) * 0.1)
        first = model.transformer_blocks[0].norm1.emb
        for block in model.transformer_blocks[1:]:  # one embedder, as in the converted release
            block.norm1.emb.load_state_dict(first.state_dict())
    model.save_pretrained(tmp_path / "transformer")
    return model.eval(), load_dit(tmp_path)


def inputs():
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(4, 4, 8, 8, generator=generator) * torch.tensor([0.01, 1.0, 3.0, 10.0]).view(4, 1, 1, 1)
    return x, torch.tensor([0, 20, 600, 999]), torch.tensor([0, 4, 5, 2])


@torch.no_grad()
def test_diffusers_variant_equals_diffusers_dit(tmp_path):
    diffusers_model, ours = tiny_diffusers(tmp_path)
    x, t, y = inputs()
    expected = diffusers_model(x, timestep=t, class_labels=y).sample
    assert ours.variant == "official"
    official = ours(x, t, y)
    assert (official - expected).abs().max() > 0.1
    ours.use_variant("diffusers")
    torch.testing.assert_close(ours(x, t, y), expected, atol=TOLERANCE_32, rtol=0)
    x64 = x.double()
    torch.testing.assert_close(ours.double()(x64, t, y), diffusers_model.double()(x64, timestep=t, class_labels=y).sample,
                               atol=TOLERANCE_64, rtol=0)
    ours.float().use_variant("official")
    torch.testing.assert_close(ours(x, t, y), official, atol=0, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("wrong", ["shift", "eps"])
def test_each_difference_alone_is_far_above_the_noise(tmp_path, wrong):
    diffusers_model, ours = tiny_diffusers(tmp_path)
    x, t, y = inputs()
    x = x.double()
    expected = diffusers_model.double()(x, timestep=t, class_labels=y).sample
    ours.double().use_variant("diffusers")
    if wrong == "shift":
        ours.t_embedder.frequency_shift = VARIANTS["official"][0]
    else:
        for block in ours.blocks:
            block.norm2.eps = VARIANTS["official"][1]
    assert (ours(x, t, y) - expected).abs().max() > 1e4 * TOLERANCE_64


def test_unknown_variant_is_refused(tmp_path):
    _, ours = tiny_diffusers(tmp_path)
    with pytest.raises(ValueError, match="diffusers"):
        ours.use_variant("sd3")
