"""End to end: `var`, `var-cls` and `hieramp` distill a tiny 2-class set, and fine-tuning resumes."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ddbench.core.config import config_to_dict
from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.identity import readable_label
from ddbench.core.pipeline import build_plugin, distill
from ddbench.core.progress import NullProgress
from ddbench.methods.hieramp import HierAmp, PlainVar, VarCls
from ddbench.methods.hieramp.finetune import FINETUNED_WEIGHTS, FinetuneConfig, finetune_class_tokens
from ddbench.methods.hieramp.model import load_class_token_var
from tests.evaluators.synthetic import ColourSquares
from tests.methods.hieramp.helpers import save_checkpoints, tiny_class_token, tiny_plain


class TwoColours(ColourSquares):
    num_colours = 2


def run(method_cls, overrides, out_dir, ipc=2):
    dataset = TwoColours()
    method = build_plugin(method_cls, dataset, overrides)
    return distill(method, dataset, ipc, 0, out_dir, torch.device("cpu"), None, NullProgress())


def test_tiny_distill_of_two_classes_writes_images_and_saliency(tmp_path):
    var_path, vqvae_path = save_checkpoints(tmp_path / "ckpt", *tiny_class_token(num_classes=2))
    overrides = {"var_ckpt": str(var_path), "vqvae_ckpt": str(vqvae_path), "top_k": "20", "save_saliency": "true"}
    distilled = run(HierAmp, overrides, tmp_path / "run")
    images = sorted((tmp_path / "run" / "images").rglob("*.png"))
    assert len(images) == 4 and all(Image.open(p).size == (8, 8) for p in images)
    saliency = tmp_path / "run" / "saliency" / "c1"
    assert (saliency / "0_overlay.png").is_file() and (saliency / "1_scale3.png").is_file()
    assert set(json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]) >= {"beta", "rho", "amp_mode"}
    assert distilled.ipc == 2
    # same seeds, same images: a class distilled alone (as in a sharded run) reproduces
    method = build_plugin(HierAmp, TwoColours(), {**overrides, "save_saliency": "false"})
    again = run(HierAmp, {**overrides, "save_saliency": "false"}, tmp_path / "again")
    first = [Image.open(p).tobytes() for p in images]
    assert first == [Image.open(p).tobytes() for p in sorted((tmp_path / "again" / "images").rglob("*.png"))]
    assert method.config.beta == (5.0,)


def test_the_three_methods_share_seeds_and_differ_only_where_they_should(tmp_path):
    model, vqvae = tiny_class_token(num_classes=2)
    var_path, vqvae_path = save_checkpoints(tmp_path / "ckpt", model, vqvae)
    plain_path, _ = save_checkpoints(tmp_path / "plain", *tiny_plain(num_classes=2))
    base = {"var_ckpt": str(var_path), "vqvae_ckpt": str(vqvae_path), "top_k": "20"}
    outputs = {}
    for cls, extra in ((PlainVar, {"var_ckpt": str(plain_path)}), (VarCls, {}), (HierAmp, {"beta": "0"}),
                       (HierAmp, {"ablation": "t3-7-50-fine"})):
        out = tmp_path / f"{cls.name}-{extra.get('beta') or extra.get('ablation') or 0}"
        run(cls, {**base, **extra}, out, ipc=1)
        outputs[out.name] = [Image.open(p).tobytes() for p in sorted((out / "images").rglob("*.png"))]
    assert outputs["hieramp-0"] == outputs["var-cls-0"]
    assert outputs["hieramp-t3-7-50-fine"] != outputs["var-cls-0"]
    assert len(outputs["var-0"]) == 2 and outputs["var-0"] != outputs["var-cls-0"]


def test_missing_checkpoints_are_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="var_ckpt"):
        run(HierAmp, {}, tmp_path / "run")
    plain_path, vqvae_path = save_checkpoints(tmp_path / "plain", *tiny_plain(num_classes=2))
    with pytest.raises(CheckpointError, match="finetune"):
        run(VarCls, {"var_ckpt": str(plain_path), "vqvae_ckpt": str(vqvae_path)}, tmp_path / "run2")


def test_ablation_presets_resolve_into_the_stored_config():
    dataset = TwoColours()
    assert build_plugin(HierAmp, dataset, {"ablation": "t4-0.5-5-5"}).config.beta == (0.5, 5.0, 5.0)
    assert build_plugin(HierAmp, dataset, {"ablation": "t3-3-50-mid"}).config.amp_stages == "mid"


def test_an_explicit_set_beats_the_ablation_preset():
    dataset = TwoColours()
    method = build_plugin(HierAmp, dataset, {"ablation": "t3-3-50-mid", "beta": "1"})
    assert method.config.beta == (1.0,) and method.config.amp_stages == "mid" and method.config.ablation == "t3-3-50-mid"
    # the label shows the preset and the key that overrode it, nothing the preset itself set
    assert readable_label(method.name, config_to_dict(method.config), method.defaults) == "hieramp ablation=t3-3-50-mid beta=1"
    plain = build_plugin(HierAmp, dataset, {})
    assert readable_label(plain.name, config_to_dict(plain.config), plain.defaults) == "hieramp"
    with pytest.raises(ConfigError, match="unknown ablation 't3-3-50-mld'.*did you mean t3-3-50-mid"):
        build_plugin(HierAmp, dataset, {"ablation": "t3-3-50-mld"})


def test_finetune_from_a_plain_checkpoint_resumes_exactly(tmp_path):
    plain, vqvae = tiny_plain(num_classes=2)
    _, vqvae_path = save_checkpoints(tmp_path / "ckpt", plain, vqvae)
    config = FinetuneConfig(epochs=4 * 8 / 48, batch_size=8, checkpoint_every=2)  # 4 steps over 48 images
    train = TwoColours().split("train")
    straight = finetune_class_tokens(plain.state_dict(), vqvae_path, train, tmp_path / "a", config=config,
                                     val_set=TwoColours().split("val"))
    assert straight["steps"] == 4 and "class_head_val_accuracy" in straight
    partial = finetune_class_tokens(plain.state_dict(), vqvae_path, train, tmp_path / "b", config=config, stop_after=2)
    assert not partial["finished"]
    resumed = finetune_class_tokens(plain.state_dict(), vqvae_path, train, tmp_path / "b", config=config)
    assert resumed["resumed_from"] == 2
    a = torch.load(tmp_path / "a" / FINETUNED_WEIGHTS, weights_only=True)
    b = torch.load(tmp_path / "b" / FINETUNED_WEIGHTS, weights_only=True)
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    model, _, had = load_class_token_var(tmp_path / "a" / FINETUNED_WEIGHTS, vqvae_path)
    assert had and not torch.equal(model.state_dict()["blocks.0.attn.mat_qkv.weight"], plain.state_dict()["blocks.0.attn.mat_qkv.weight"])
