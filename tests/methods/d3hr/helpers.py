"""The seeded tiny models and images of the D3HR tests (and of the out-of-repo script that recorded
data/official_reference.json with the release's code).

data/dit/ and data/vae/ are diffusers folders (float16 safetensors) of the models `tiny_dit()` and
`tiny_vae()` make: a DiTTransformer2DModel with 1,000 classes (the release hard-codes the null label
1000), 2 layers, width 32, on 4x4x4 latents, and an AutoencoderKL with 4 blocks of 8 channels (8x down,
like the SD VAE) from 32 px images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent / "data"
LABEL = 3  # the generator label of the tiny class
IMAGE_SIDE = 32
IMAGES = 6
IPC = 3


def _perturb(model: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():  # the zero-initialised layers must matter too
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
            parameter.copy_(parameter.half().float())  # float16-representable, as stored (buffers stay exact)
    return model.eval()


def tiny_dit():
    import diffusers

    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                                            num_layers=2, sample_size=4, patch_size=2, num_embeds_ada_norm=1000)
    model = _perturb(model, 1, 0.05)
    first = model.transformer_blocks[0].norm1.emb
    for block in model.transformer_blocks[1:]:  # one embedder, as in the converted release
        block.norm1.emb.load_state_dict(first.state_dict())
    return model


def tiny_vae():
    import diffusers

    torch.manual_seed(0)
    blocks = 4
    model = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
                                    up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=(8,) * blocks,
                                    layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=IMAGE_SIDE)
    return _perturb(model, 2, 0.02)


def class_images() -> np.ndarray:
    """(6, 36, 40, 3) uint8: the tiny class's 'training images' (not square, so resize and crop matter)."""
    return np.random.default_rng(0).integers(0, 256, (IMAGES, 36, 40, 3), dtype=np.uint8)


def encode_seeds() -> list[int]:
    """The seed of each image's posterior sample (the recording seeded the global RNG with it per image)."""
    return [100 + k for k in range(IMAGES)]


def group_batches() -> tuple[int, int]:
    """(batches, candidates per batch) of the recorded group sampling; batch i seeded i * 12345 upstream."""
    return 4, 50
