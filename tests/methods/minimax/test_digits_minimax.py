"""The shipped Minimax fine-tune of the digits DiT: small, recorded against the shipped base, recognisable,
and it differs from the base only in the tensors Minimax trains."""

from __future__ import annotations

import torch

from ddbench.core.hashing import sha256_file
from ddbench.generators.dit.shipped import SHIPPED_DIT, load_digits_dit, sample_check
from ddbench.generators.dit.shipped import weights_dir as base_weights_dir
from ddbench.methods.minimax.digits import SHIPPED_MINIMAX, load_digits_minimax, shipped_info, weights_dir
from ddbench.methods.minimax.objective import TRAINABLE_KEYWORDS


def test_shipped_file_is_small_and_recorded_against_the_shipped_base():
    info = shipped_info()
    path = weights_dir() / SHIPPED_MINIMAX
    assert path.stat().st_size < 3 * 2**20
    assert info["files"][SHIPPED_MINIMAX]["sha256"] == sha256_file(path)
    assert info["command"] == "ddbench minimax finetune --dataset digits --out DIR"
    assert info["minimax"]["finished"]
    assert info["minimax"]["base_sha256"] == sha256_file(base_weights_dir() / SHIPPED_DIT)
    assert load_digits_minimax()[1]["file"] == str(path)  # the shipped file, not a fine-tune made on first use


def test_minimax_changes_only_the_trainable_tensors():
    base = load_digits_dit().state_dict()
    tuned = load_digits_minimax()[0].state_dict()
    changed = {key for key in base if not torch.equal(base[key], tuned[key])}
    assert changed and all(any(k in key for k in TRAINABLE_KEYWORDS) for key in changed)
    assert any("gamma" in key for key in changed) and "y_embedder.embedding_table.weight" in changed


def test_samples_are_recognised_as_recorded():
    accuracy = sample_check(load_digits_minimax()[0], per_class=3)
    print(f"\nminimax_accuracy: {accuracy:.0%} of 30 samples recognised (chance 10%)")
    # Measured here: 25/30; seeds 1-4 give 25-28 of 30 (see test_dit_digits: float noise tips a
    # borderline sample, not several)
    assert accuracy >= 0.8
    assert abs(accuracy - shipped_info()["sample_check"]["minimax_accuracy"]) <= 0.2  # 3 per class here, 10 in the record


def test_a_shipped_fine_tune_of_another_base_is_made_on_first_use_and_the_identity_says_so(isolated_home, monkeypatch):
    """The identity before the fine-tune exists names what it will be made from; the values are those the
    code gave since the fine-tune recipe embeds the one OptimizerRecipe (6084be3c0805f27f while the
    optimiser fields were flat; the recipe's values did not change)."""
    import dataclasses

    from ddbench.methods.minimax import digits

    monkeypatch.setattr(digits, "FIRST_USE", dataclasses.replace(digits.FIRST_USE, recorded_base=lambda path: "other"))
    assert digits.FIRST_USE.source() is None  # neither the shipped file (another base) nor a cached one
    assert digits.DIGITS_MINIMAX_WEIGHTS.identity() == {
        "generator": "9211451c09ad65cb89dee60b2f62b5b9dba7f808b2d347691369fc0a40d84803",
        "minimax": "to-finetune:71b4ab3db4fcb4ff"}
    cached = digits.FIRST_USE.cache_folder() / SHIPPED_MINIMAX
    assert cached.parent == isolated_home / "cache" / "dit" / "digits" / "9211451c09ad65cb"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((weights_dir() / SHIPPED_MINIMAX).read_bytes())
    assert digits.DIGITS_MINIMAX_WEIGHTS.identity()["minimax"] == sha256_file(cached)
    assert load_digits_minimax()[1]["file"] == str(cached)
