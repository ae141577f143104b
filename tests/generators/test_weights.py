"""The weights table: explicit path -> cache -> download from a hub-like loopback server, with
checksums, `.part` files, offline errors that say what to put where, and the table's own facts."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from ddbench.core.errors import CheckpointError, ConfigError, FetchError
from ddbench.core.hashing import sha256_file
from ddbench.core.progress import NullProgress
from ddbench.generators import weights
from ddbench.generators.weights import WeightFile, WeightsEntry, resolve_weights
from tests.generators.hub_server import running_hub, serve_as

PAYLOAD = b"tiny weights " * 1000


hub = pytest.fixture(running_hub)


def tiny_entry(payload: bytes = PAYLOAD, sha256: str | None = "auto", size: int | None = -1) -> WeightsEntry:
    checksum = hashlib.sha256(payload).hexdigest() if sha256 == "auto" else sha256
    return WeightsEntry(name="tiny", kind="var", repo_id="Owner/repo",
                        files=(WeightFile("tiny.pth", len(payload) if size == -1 else size, checksum),))


class LoggingProgress(NullProgress):
    def __init__(self):
        self.messages, self.advanced, self.totals = [], 0, []

    def log(self, message):
        self.messages.append(message)

    def task(self, description, total=None):
        self.totals.append(total)
        outer = self
        from contextlib import contextmanager

        @contextmanager
        def context():
            class Task:
                def advance(self, amount=1):
                    outer.advanced += amount

                def update(self, description):
                    pass
            yield Task()
        return context()


def test_download_checks_the_sha256_then_lands_in_the_cache_and_is_not_fetched_again(hub, isolated_home):
    hub.add("Owner/repo", "tiny.pth", PAYLOAD)
    progress = LoggingProgress()
    path = resolve_weights(tiny_entry(), progress=progress)
    assert path == isolated_home / "weights" / "Owner/repo" / "tiny.pth"
    assert path.read_bytes() == PAYLOAD and not path.with_name("tiny.pth.part").exists()
    assert progress.advanced == len(PAYLOAD) and progress.totals == [len(PAYLOAD)]
    assert any("downloading tiny" in m and str(path) in m for m in progress.messages)
    assert resolve_weights(tiny_entry()) == path  # cache hit
    assert hub.downloads("tiny.pth") == 1


def test_a_checksum_mismatch_deletes_the_download_and_says_both_hashes(hub, isolated_home):
    hub.add("Owner/repo", "tiny.pth", PAYLOAD)
    entry = tiny_entry(sha256="0" * 64)
    with pytest.raises(FetchError, match=f"sha256 {hashlib.sha256(PAYLOAD).hexdigest()}.*expected .*sha256 0000"):
        resolve_weights(entry)
    folder = isolated_home / "weights" / "Owner/repo"
    assert not (folder / "tiny.pth").exists() and not (folder / "tiny.pth.part").exists()


def test_an_interrupted_download_resumes_from_its_part_file(hub, isolated_home):
    hub.add("Owner/repo", "tiny.pth", PAYLOAD)
    part = isolated_home / "weights" / "Owner/repo" / "tiny.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:5000])
    path = resolve_weights(tiny_entry())
    assert path.read_bytes() == PAYLOAD
    ranges = [p for m, p in hub.requests if m == "GET"]
    assert len(ranges) == 1  # one request, for the missing tail (the server answered 206)


def test_offline_fails_at_once_saying_which_file_to_put_where(hub, isolated_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.add("Owner/repo", "tiny.pth", PAYLOAD)
    with pytest.raises(FetchError) as error:
        resolve_weights(tiny_entry(), option="--set var_ckpt=PATH")
    message = str(error.value)
    assert "HF_HUB_OFFLINE=1" in message and f"{len(PAYLOAD):,} bytes" in message
    assert f"put tiny.pth" in message and str(isolated_home / "weights" / "Owner/repo") in message
    assert "/Owner/repo/resolve/main/tiny.pth" in message and "--set var_ckpt=PATH" in message
    assert hub.requests == []


def test_offline_with_the_file_in_the_cache_works(isolated_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = isolated_home / "weights" / "Owner/repo" / "tiny.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    assert resolve_weights(tiny_entry()) == cached


def test_a_wrong_file_in_the_cache_is_an_error_not_a_silent_load(isolated_home):
    cached = isolated_home / "weights" / "Owner/repo" / "tiny.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"something else")
    with pytest.raises(CheckpointError, match="damaged or another one: delete it"):
        resolve_weights(tiny_entry())


def test_an_explicit_path_wins_and_is_not_checked(tmp_path, hub):
    own = tmp_path / "mine.pth"
    own.write_bytes(b"fine-tuned elsewhere")
    assert resolve_weights(tiny_entry(), own) == own
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_weights(tiny_entry(), tmp_path / "missing.pth")
    assert hub.requests == []


def test_a_missing_remote_file_is_one_clear_fetch_error(hub):
    with pytest.raises(FetchError, match="cannot download .*tiny.pth.*put tiny.pth"):
        resolve_weights(tiny_entry())


def test_folder_entries_resolve_to_their_folder(hub, isolated_home):
    config, tensors = b'{"latent_channels": 4}', b"safetensors bytes"
    hub.add("org/vae", "config.json", config)
    hub.add("org/vae", "model.safetensors", tensors)
    entry = WeightsEntry(name="vae", kind="sd-vae", repo_id="org/vae",
                         files=(WeightFile("config.json", len(config), hashlib.sha256(config).hexdigest()),
                                WeightFile("model.safetensors", None, hashlib.sha256(tensors).hexdigest())))
    folder = resolve_weights(entry)
    assert folder == isolated_home / "weights" / "org/vae"
    assert (folder / "config.json").read_bytes() == config and (folder / "model.safetensors").read_bytes() == tensors


def test_hub_ids_in_the_var_loader_go_through_the_table(hub, monkeypatch, tmp_path):
    import torch

    from ddbench.generators.var import load_vqvae
    from tests.generators.var_helpers import TINY_PATCH_NUMS, tiny_models

    _, vqvae = tiny_models()
    file = tmp_path / "vae.pth"
    torch.save(vqvae.state_dict(), file)
    serve_as(hub, monkeypatch, "vae_ch160v4096z32", file.read_bytes())
    for source in ("FoundationVision/var/vae_ch160v4096z32.pth", "vae_ch160v4096z32"):
        loaded = load_vqvae(source, patch_nums=TINY_PATCH_NUMS)
        assert torch.equal(loaded.quantize.embedding.weight, vqvae.quantize.embedding.weight)
    assert hub.downloads("vae_ch160v4096z32.pth") == 1


def test_the_table_names_every_release_file_with_its_facts():
    names = set(weights.TABLE)
    assert {"vae_ch160v4096z32", "var_d16", "var_d20", "var_d24", "var_d30", "dit_xl_2_256", "sd_vae_ft_mse",
            "sd_vae_ft_ema"} <= names
    for entry in weights.TABLE.values():
        assert entry.licence and entry.checksum_source and entry.architecture
        assert entry.repo_id or entry.url_base or entry.shipped_in  # every row but the shipped ones is downloadable
        for file in entry.files:
            assert file.sha256 is None or len(file.sha256) == 64
    assert weights.TABLE["var_d16"].files[0].size == 1_243_116_346  # reference.md
    assert weights.TABLE["vae_ch160v4096z32"].files[0].size == 436_075_834
    assert weights.TABLE["dit_xl_2_256"].files[0].sha256 is None  # none published
    assert weights.TABLE["var_d16"].label_space == "imagenet1k"
    with pytest.raises(ConfigError, match="did you mean 'var_d16'"):
        weights.get_entry("var_d61")


def test_files_shipped_in_the_package_are_rows_of_the_table(isolated_home):
    from ddbench.generators.var.configs import get_preset

    shipped = {name: entry for name, entry in weights.TABLE.items() if entry.shipped_in}
    assert set(shipped) == {"digits_vqvae", "digits_var", "digits_dit", "digits_minimax", "digits_var_cls"}
    for name, entry in shipped.items():
        assert not (entry.repo_id or entry.url_base) and entry.made_by.startswith("ddbench ")
        path = resolve_weights(name)  # read where it is: nothing is downloaded or copied into the cache
        assert path.is_file() and path.parent.name == "weights" and isolated_home not in path.parents
        assert weights.known_sha256(name) == sha256_file(path)
    preset = get_preset("digits")  # the rows describe the shipped models (run_tokeniser loads the VQ-VAE by its row)
    assert weights.TABLE["digits_vqvae"].architecture["patch_nums"] == list(preset.vqvae.patch_nums)
    assert weights.TABLE["digits_var"].architecture["depth"] == preset.var.depth
    assert weights.TABLE["digits_var_cls"].architecture["class_tokens"] == len(preset.var.patch_nums)
    missing = dataclasses.replace(weights.TABLE["digits_var"], shipped_in=str(isolated_home / "nowhere"))
    with pytest.raises(CheckpointError, match="missing from the package.*ddbench var reproduce-digits"):
        weights.known_sha256(missing)  # a broken install is an error, never an identity of "unpublished" weights


def test_class_token_slots_point_at_the_command_that_makes_them(isolated_home):
    slot = weights.class_token_slot("woof", "ddbench hieramp finetune --dataset woof")
    with pytest.raises(CheckpointError, match="make it with `ddbench hieramp finetune --dataset woof`"):
        resolve_weights(slot, option="--set var_ckpt=PATH")
    slot.cache_path().parent.mkdir(parents=True)
    slot.cache_path().write_bytes(b"made here")
    assert resolve_weights(slot) == isolated_home / "weights" / "ddbench/class-token-var" / "var_d16_cls_woof.pth"
