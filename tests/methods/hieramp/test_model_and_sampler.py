"""The class-token VAR: checkpoint layout, cached = uncached, and what amplification changes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.seeding import torch_generator
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler
from ddbench.methods.hieramp.amplify import AmplificationPlan, SaliencyRecord
from ddbench.methods.hieramp.model import load_class_token_var
from ddbench.methods.hieramp.sampler import ClassTokenSampler
from tests.methods.hieramp.helpers import tiny_class_token, tiny_plain

OPTIONS = SamplingOptions(cfg=4.0, top_k=20, top_p=0.95)
LABELS = torch.tensor([1, 3])


def plan(**overrides) -> AmplificationPlan:
    settings = dict(num_scales=4, depth=2, beta=(5.0,), rho=(0.5,), blocks=(-2,))
    return AmplificationPlan.resolve(**{**settings, **overrides})


def sample(model, vqvae, amplification=None, record=None, seed=0, options=OPTIONS):
    sampler = ClassTokenSampler(model, vqvae, options, amplification, record)
    return sampler.sample_indices(LABELS, torch_generator(seed, "test-sample"))


def test_plain_checkpoint_loads_with_seeded_fresh_class_tokens(tmp_path):
    plain, vqvae = tiny_plain()
    model, _, had = load_class_token_var(plain.state_dict(), vqvae, init_seed=3)
    again, _, _ = load_class_token_var(plain.state_dict(), vqvae, init_seed=3)
    assert not had
    state = model.state_dict()
    assert set(plain.state_dict()) < set(state)
    assert sorted(set(state) - set(plain.state_dict())) == [
        "class_head.bias", "class_head.weight", *[f"cls_tokens.{i}" for i in range(4)]]
    assert state["cls_tokens.0"].shape == (1, 1, 64) and state["class_head.weight"].shape == (5, 64)
    assert all(torch.equal(state[k], plain.state_dict()[k]) for k in plain.state_dict())
    assert torch.equal(state["cls_tokens.2"], again.state_dict()["cls_tokens.2"]) and state["cls_tokens.2"].abs().sum() > 0
    # a fine-tuned (superset) checkpoint round-trips, and a plain one is refused where class tokens are required
    torch.save(state, tmp_path / "hieramp.pth")
    reloaded, _, had = load_class_token_var(tmp_path / "hieramp.pth", vqvae, init_seed=99)
    assert had and torch.equal(reloaded.state_dict()["cls_tokens.2"], state["cls_tokens.2"])
    with pytest.raises(CheckpointError, match="finetune"):
        load_class_token_var(plain.state_dict(), vqvae, require_class_tokens=True)


def test_cached_sampling_equals_the_uncached_teacher_forced_pass():
    model, vqvae = tiny_class_token()
    hidden_per_scale = []
    sampler = ClassTokenSampler(model, vqvae, OPTIONS)
    sampler.on_scale_hidden = lambda scale_index, hidden: hidden_per_scale.append(hidden)
    indices = sampler.sample_indices(LABELS, torch_generator(0, "test-sample"))
    cached = torch.cat([hidden[:, :-1] for hidden in hidden_per_scale], dim=1)  # drop each class-token row
    teacher_input = vqvae.quantize.teacher_forcing_input(indices).repeat(2, 1, 1)
    with torch.no_grad():
        uncached = model.hidden_states(torch.cat((LABELS, torch.full_like(LABELS, 5))), teacher_input)
    assert torch.allclose(cached, uncached, atol=1e-5)
    # class tokens matter: without them the image tokens' states differ
    plain_indices = ScaleSampler(model, vqvae, OPTIONS).sample_indices(LABELS, torch_generator(0, "test-sample"))
    assert any(not torch.equal(a, b) for a, b in zip(indices, plain_indices))


def test_class_loss_reads_the_last_blocks_attention_output_at_class_positions():
    model, vqvae = tiny_class_token()
    tokens = [torch.randint(64, (2, pn * pn), generator=torch_generator(0, "t", pn)) for pn in model.patch_nums]
    teacher_input = vqvae.quantize.teacher_forcing_input(tokens)
    captured = []
    handle = model.blocks[-1].attn.register_forward_hook(lambda m, a, out: captured.append(out))
    token_logits, class_logits = model.forward_with_class_logits(LABELS, teacher_input)
    handle.remove()
    assert token_logits.shape == (2, 30, 64) and class_logits.shape == (2, 4, 5)
    assert torch.allclose(class_logits, model.class_head(captured[0][:, model.cls_positions]))


def test_beta_zero_equals_var_cls_and_beta_five_changes_the_images():
    model, vqvae = tiny_class_token()
    var_cls = sample(model, vqvae)
    assert all(torch.equal(a, b) for a, b in zip(sample(model, vqvae, plan(beta=(0.0,))), var_cls))
    amplified = sample(model, vqvae, plan(beta=(5.0,)))
    assert any(not torch.equal(a, b) for a, b in zip(amplified, var_cls))


def test_post_softmax_with_beta_one_equals_no_amplification():
    model, vqvae = tiny_class_token()
    var_cls = sample(model, vqvae)
    same = sample(model, vqvae, plan(beta=(1.0,), mode="post_softmax"))
    assert all(torch.equal(a, b) for a, b in zip(same, var_cls))
    assert any(not torch.equal(a, b) for a, b in zip(sample(model, vqvae, plan(beta=(50.0,), mode="post_softmax")), var_cls))


@pytest.mark.parametrize("fast_cpu", [False, True], ids=["plain-kernels", "fast-cpu"])
def test_only_the_amplified_block_leaves_the_sdpa_path(monkeypatch, fast_cpu):
    """Plain kernels: the amplified block forms the explicit logits. fast_cpu: it stays on SDPA too,
    with the amplification in the mask (only the class-token row is formed explicitly)."""
    options = SamplingOptions(cfg=4.0, top_k=20, top_p=0.95, fast_cpu=fast_cpu)
    fused = ClassTokenSampler(*tiny_class_token(), options).uses_fast_cpu(torch.device("cpu"))
    model, vqvae = tiny_class_token()
    calls = {"sdpa": 0}
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls["sdpa"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    record = SaliencyRecord()
    sample(model, vqvae, plan(blocks=(0,)), record, options=options)
    depth, scales = len(model.blocks), len(model.patch_nums)
    # with a saliency record every scale reads block 0 explicitly (amplifying only 1..3); the others stay on SDPA
    assert calls["sdpa"] == depth * scales - (0 if fused else scales)
    assert sorted(record.maps) == [0, 1, 2, 3] and sorted(record.selected) == [1, 2, 3]
    assert record.maps[2].shape == (4, 9) and torch.allclose(record.maps[2].sum(-1), torch.ones(4))
    assert not torch.equal(record.maps[3][0], record.maps[3][2])  # each CFG half has its own saliency
    calls["sdpa"] = 0
    sample(model, vqvae, options=options)
    assert calls["sdpa"] == depth * scales


def test_uncached_class_token_sampling_is_refused():
    model, vqvae = tiny_class_token()
    with pytest.raises(ConfigError):
        ClassTokenSampler(model, vqvae, SamplingOptions(use_kv_cache=False))
