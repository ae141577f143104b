"""The released layouts load strictly: DiT-XL/2's 292 official keys (675,129,632 parameters, on the meta
device, nothing allocated) and a diffusers DiTTransformer2DModel folder, which then computes the official
function (diffusers' own forward does not, as shipped)."""

from __future__ import annotations

import pytest
import torch

from ddbench.core.errors import CheckpointError
from ddbench.generators.dit.loading import diffusers_to_official, load_dit

XL_PARAMETERS = 675_129_632


def official_xl_layout() -> dict[str, tuple[int, ...]]:
    """DiT-XL/2 256x256 as released: key -> shape (written out from the release, not from our module)."""
    hidden, patch, latent, classes, mlp = 1152, 2, 4, 1000, 4608
    layout = {
        "x_embedder.proj.weight": (hidden, latent, patch, patch), "x_embedder.proj.bias": (hidden,),
        "pos_embed": (1, 256, hidden),
        "t_embedder.mlp.0.weight": (hidden, 256), "t_embedder.mlp.0.bias": (hidden,),
        "t_embedder.mlp.2.weight": (hidden, hidden), "t_embedder.mlp.2.bias": (hidden,),
        "y_embedder.embedding_table.weight": (classes + 1, hidden),
        "final_layer.linear.weight": (patch * patch * 2 * latent, hidden), "final_layer.linear.bias": (patch * patch * 2 * latent,),
        "final_layer.adaLN_modulation.1.weight": (2 * hidden, hidden), "final_layer.adaLN_modulation.1.bias": (2 * hidden,),
    }
    for block in range(28):
        for name, (rows, cols) in {"attn.qkv": (3 * hidden, hidden), "attn.proj": (hidden, hidden), "mlp.fc1": (mlp, hidden),
                                   "mlp.fc2": (hidden, mlp), "adaLN_modulation.1": (6 * hidden, hidden)}.items():
            layout[f"blocks.{block}.{name}.weight"] = (rows, cols)
            layout[f"blocks.{block}.{name}.bias"] = (rows,)
    return layout


def meta_state(layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in layout.items()}


def test_official_xl_layout_loads_strictly_without_memory():
    layout = official_xl_layout()
    assert len(layout) == 292
    assert sum(torch.Size(shape).numel() for shape in layout.values()) == XL_PARAMETERS
    model = load_dit(meta_state(layout), device="meta")
    config = model.config
    assert (config.depth, config.hidden_size, config.num_heads, config.num_classes, config.input_size) == (28, 1152, 16, 1000, 32)
    gammas = {k: v for k, v in model.state_dict().items() if "gamma" in k}
    assert len(gammas) == 4 * 14  # Minimax's gammas on blocks 0-13, 1 when absent
    assert sum(v.numel() for k, v in model.state_dict().items() if k not in gammas) == XL_PARAMETERS


@pytest.mark.parametrize("damage", ["drop", "reshape", "extra"])
def test_damaged_official_layout_names_the_key(damage):
    state = meta_state(official_xl_layout())
    if damage == "drop":
        del state["blocks.27.mlp.fc2.bias"]
    elif damage == "reshape":
        state["blocks.3.attn.proj.weight"] = torch.empty(1152, 1000, device="meta")
    else:
        state["blocks.0.attn.q_norm.weight"] = torch.empty(72, device="meta")
    with pytest.raises(CheckpointError, match=r"blocks\.(27\.mlp\.fc2\.bias|3\.attn\.proj\.weight|0\.attn\.q_norm)"):
        load_dit(state, device="meta")


def test_diffusers_xl_layout_maps_to_the_official_keys():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        reference = diffusers.DiTTransformer2DModel(out_channels=8)  # facebook/DiT-XL-2-256 transformer config
    state = reference.state_dict()
    assert len(state) == 6 + 28 * 19
    official = diffusers_to_official(state, depth=28, where="meta diffusers")
    assert {k: tuple(v.shape) for k, v in official.items()} == {k: v for k, v in official_xl_layout().items() if k != "pos_embed"}


def tiny_diffusers_folder(tmp_path, tie_embedders: bool = True):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                                            num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=5)
    with torch.no_grad():
        for parameter in model.parameters():  # adaLN and output layers matter: no zeros
            parameter.add_(torch.randn_like(parameter) * 0.05)
        if tie_embedders:  # as in a converted release: one embedder, copied into every block
            first = model.transformer_blocks[0].norm1.emb
            for block in model.transformer_blocks[1:]:
                block.norm1.emb.load_state_dict(first.state_dict())
    folder = tmp_path / "dit-tiny"
    model.save_pretrained(folder / "transformer")
    return model.eval(), folder


@torch.no_grad()
def test_diffusers_folder_loads_and_computes_the_official_function(tmp_path):
    diffusers_model, folder = tiny_diffusers_folder(tmp_path)
    ours = load_dit(folder)
    assert ours.config.num_heads == 2 and ours.config.hidden_size == 32 and ours.config.num_classes == 5
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([3, 500, 999]), torch.tensor([0, 4, 5])
    ours_out = ours(x, t, y)
    shipped = diffusers_model(x, timestep=t, class_labels=y).sample
    assert (ours_out - shipped).abs().max() > 1e-4  # diffusers as shipped is another function
    for block in diffusers_model.transformer_blocks:  # the two differences, patched to the official values
        block.norm1.emb.time_proj.downscale_freq_shift = 0
        block.norm3.eps = 1e-6
    official = diffusers_model(x, timestep=t, class_labels=y).sample
    torch.testing.assert_close(ours_out, official, atol=1e-5, rtol=1e-4)
    reloaded = load_dit(folder / "transformer")  # the transformer folder itself works too
    torch.testing.assert_close(reloaded(x, t, y), ours_out)


def test_diffusers_folder_with_untied_embedders_is_refused(tmp_path):
    _, folder = tiny_diffusers_folder(tmp_path, tie_embedders=False)
    with pytest.raises(CheckpointError, match="one shared timestep/label embedder"):
        load_dit(folder)


def test_official_round_trip_and_minimax_gammas(tmp_path):
    from tests.generators.dit.helpers import MINIMAX, tiny_model

    model = tiny_model(MINIMAX, seed=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {}, "ema": model.state_dict(), "opt": {}}, path)  # a training checkpoint: EMA is used
    loaded = load_dit(path, num_heads=2)
    assert torch.equal(loaded.blocks[0].attn.gamma1, model.blocks[0].attn.gamma1)
    plain = {k: v for k, v in model.state_dict().items() if "gamma" not in k}
    assert load_dit(plain, num_heads=2).blocks[5].gamma1.eq(1).all()  # absent gammas are 1
    partial = dict(plain, **{"blocks.0.gamma1": model.blocks[0].gamma1.detach()})
    with pytest.raises(CheckpointError, match="gamma"):
        load_dit(partial, num_heads=2)
    with pytest.raises(CheckpointError, match="num_heads"):
        load_dit(plain)
