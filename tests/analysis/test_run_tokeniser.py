"""The VQ-VAE of a run (shipped digits weights for a VAR-family run without checkpoint keys) and the
token maps of its images, checked against encoding the same images directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddbench.analysis.run_tokeniser import open_run, run_vqvae, tokenise
from ddbench.core.distilled import DistilledSetWriter
from ddbench.core.errors import CheckpointError, DistilledSetError
from ddbench.core.identity import RunIdentity
from ddbench.core.registry import create_dataset
from ddbench.generators.var import load_digits_models
from ddbench.generators.var.shipped import SHIPPED_VQVAE, shipped_weights_identity

CPU = torch.device("cpu")


def digits_run(root, weights=None, per_class=2):
    """Real digits written as a var-cls run whose manifest records `weights` (default: the shipped ones)."""
    dataset = create_dataset("digits")
    train = dataset.split("train")
    members = dataset.class_indices("train")
    identity = RunIdentity(method="var-cls", config={"var_ckpt": None, "vqvae_ckpt": None}, dataset=dataset.fingerprint(),
                           ipc=per_class, seed=0, weights=shipped_weights_identity() if weights is None else weights)
    writer = DistilledSetWriter(root, identity, dataset.class_names, extra={"generator": "var"})
    for class_index in writer.pending_classes():
        writer.write_class(class_index, [train[i][0] for i in members[class_index][:per_class]])
    return writer.finalize(), train, members


def test_a_digits_var_run_is_tokenised_with_the_shipped_vqvae(tmp_path):
    run, train, members = digits_run(tmp_path / "run")
    vqvae = run_vqvae(run, CPU)
    assert vqvae.source.endswith(SHIPPED_VQVAE) and vqvae.resolution == 16
    token_set = tokenise(run, vqvae, CPU, batch_size=7)  # batches that do not divide the set
    assert token_set.patch_nums == (1, 2, 3, 4, 6, 8) and token_set.vocab_size == 256
    assert token_set.labels.tolist() == [c for c in range(10) for _ in range(2)]
    _, reference = load_digits_models()
    chosen = [i for c in range(10) for i in members[c][:2]]
    images = torch.from_numpy(train.images[chosen]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    for ours, direct in zip(token_set.indices, reference.image_to_indices(images)):
        np.testing.assert_array_equal(ours, direct.numpy())


def test_a_run_without_a_known_vqvae_is_an_error_that_names_the_option(tmp_path):
    unrecorded, _, _ = digits_run(tmp_path / "plain", weights={})
    with pytest.raises(CheckpointError, match="records no VQ-VAE.*--vqvae PATH"):
        run_vqvae(unrecorded, CPU)
    foreign, _, _ = digits_run(tmp_path / "foreign", weights={"vqvae": "ab" * 32})
    with pytest.raises(CheckpointError, match="neither the weights table nor the files ddbench knows.*--vqvae PATH"):
        run_vqvae(foreign, CPU)


def test_runs_are_found_by_folder_or_run_id(tmp_path, isolated_home):
    run, _, _ = digits_run(isolated_home / "runs" / "digits" / "var-cls-x")
    assert open_run("digits/var-cls-x").root == run.root
    with pytest.raises(DistilledSetError, match="no distilled run"):
        open_run("digits/none")


def test_a_folder_of_real_images_is_analysed_with_an_explicit_vqvae(tmp_path):
    from ddbench.analysis.diagnose import analyse_tokens
    from ddbench.generators.var.shipped import shipped_weights_dir

    dataset = create_dataset("digits")
    train, members = dataset.split("train"), dataset.class_indices("train")
    for class_index, name in enumerate(dataset.class_names):
        (tmp_path / "real" / name).mkdir(parents=True)
        for i in members[class_index][:3]:
            train[i][0].save(tmp_path / "real" / name / f"{i}.png")
    result = analyse_tokens(str(tmp_path / "real"), out_dir=tmp_path / "out", vqvae_path=str(shipped_weights_dir() / SHIPPED_VQVAE),
                            patch_nums=(1, 2, 3, 4, 6, 8), device="cpu", dataset="digits")
    import json

    record = json.loads(result.read_text())
    assert record["runs"][0]["method"] == "external" and record["runs"][0]["summary"]["images"] == 30
    assert record["figure3"] is None and set(record["figures"]) == {"usage", "figure4"}


def test_a_run_recording_a_weights_table_vqvae_loads_it_from_the_cache(tmp_path, isolated_home, monkeypatch):
    from ddbench.generators import weights
    from ddbench.generators.var.configs import VQVAEConfig
    from ddbench.generators.var.loading import build_vqvae
    from ddbench.core.hashing import sha256_file

    torch.manual_seed(0)  # a tiny VQ-VAE on the release's 10-scale pyramid, 16 px in, 16x16 latent
    model = build_vqvae(VQVAEConfig(vocab_size=16, z_channels=4, ch=32, ch_mult=(1,), num_res_blocks=1))
    entry = weights.WeightsEntry(name="tiny_vq", kind="vqvae", repo_id="test/tiny", files=(weights.WeightFile("tiny.pth"),))
    entry.cache_dir().mkdir(parents=True)
    torch.save(model.state_dict(), entry.cache_path())
    digest = sha256_file(entry.cache_path())
    monkeypatch.setitem(weights.TABLE, entry.name, entry)
    run, _, _ = digits_run(tmp_path / "run", weights={"generator": "g", "vqvae": digest})
    vqvae = run_vqvae(run, CPU)
    assert vqvae.source == str(entry.cache_path()) and vqvae.sha256 == digest
    assert tokenise(run, vqvae, CPU).patch_nums == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
