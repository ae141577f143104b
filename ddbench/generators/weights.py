"""The weights table: every generator weight file ddbench knows, in one place (timm style).

Each row names its files with their source, size and sha256 (where the publisher gives one),
licence, architecture and label space. A row is one of three sources:
- released: on the Hugging Face hub or the publisher's site, downloaded into the cache on first use;
- shipped in the package (`shipped_in`, a folder of package data): read where it is;
- made here (`made_by`, the command that makes it): a class-token VAR fine-tuned for a dataset
  (`class_token_slot`), or a shipped fine-tune that is made again on first use when it no longer
  matches the row it was made from (`FirstUseFineTune`).
Methods name rows by key; format-specific loading stays in `var/loading.py` and `dit/loading.py`.
`GeneratorWeights` puts rows together into the generator a method samples for one dataset.

`resolve_weights(name)` finds a released row's files in this order:

1. an explicit path (`--set var_ckpt=PATH`): used as it is, never checked against the table;
2. the cache `$DDBENCH_HOME/weights/<repo>/<file>`: checked against the table's sha256 (hashed
   once; `cached_sha256_file` remembers it while the file's size and mtime stay the same);
3. a download: from the Hugging Face hub (`HF_ENDPOINT`, default https://huggingface.co, with
   huggingface_hub's session and token) or the publisher's URL; written to `<file>.part`,
   checked (size, sha256) and only then renamed into the cache.

With `HF_HUB_OFFLINE=1` step 3 fails at once with a message that says which file to put where.

Checksums: the hub publishes the sha256 of every LFS file (its git-lfs pointer `oid`, shown on
the file page). The values below are those oids as recorded in public repositories that pin
these files (see `checksum_source`); ddbench could not reach the hub when the table was written,
so the first real download is also the first check of the numbers. DiT's release publishes no
checksum (None: the file's sha256 is computed on first use and recorded, never compared).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ddbench.core.errors import CheckpointError, ConfigError, FetchError
from ddbench.core.files import disk_errors, locked
from ddbench.core.hashing import cached_sha256_file, stable_hash
from ddbench.core.paths import cache_dir, home
from ddbench.core.progress import NullProgress, Progress

HUB = "https://huggingface.co"
CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class WeightFile:
    """One file of an entry: its name in the repo (and the cache), exact size and sha256 if known."""

    filename: str
    size: int | None = None
    sha256: str | None = None
    approx_size: str = ""  # for display when the exact byte count is not published


@dataclass(frozen=True)
class WeightsEntry:
    """A known set of generator weights: one file, or a folder of files (diffusers layout)."""

    name: str
    kind: str  # vqvae | var | class-token-var | dit | sd-vae | classifier
    files: tuple[WeightFile, ...]
    repo_id: str | None = None  # Hugging Face hub repo; None with url_base (another host) or a local slot
    url_base: str | None = None  # the publisher's folder URL when the file is not on the hub
    revision: str = "main"
    licence: str = ""
    checksum_source: str = ""
    architecture: Mapping[str, Any] = field(default_factory=dict)
    #: label space of a class-conditional generator ("imagenet1k": 1,000 classes in WNID order)
    label_space: str | None = None
    #: for entries ddbench makes itself (shipped files, fine-tuned class-token VARs): the command that makes it
    made_by: str | None = None
    #: shipped in the package: the folder of package data holding the files, relative to the ddbench package
    shipped_in: str | None = None
    notes: str = ""

    @property
    def is_folder(self) -> bool:
        """Several files (config + weights) resolve to their folder; one file to the file."""
        return len(self.files) > 1

    @property
    def cache_subdir(self) -> str:
        return self.repo_id or f"ddbench/{self.kind}"

    def cache_dir(self) -> Path:
        """Where the files are: the package folder of a shipped row, else the weights cache."""
        if self.shipped_in:
            return Path(str(resources.files("ddbench").joinpath(self.shipped_in)))
        return home() / "weights" / self.cache_subdir

    def cache_path(self) -> Path:
        return self.cache_dir() if self.is_folder else self.cache_dir() / self.files[0].filename

    def url(self, weight_file: WeightFile) -> str | None:
        if self.repo_id:
            endpoint = os.environ.get("HF_ENDPOINT", HUB).rstrip("/")
            return f"{endpoint}/{self.repo_id}/resolve/{self.revision}/{weight_file.filename}"
        if self.url_base:
            return f"{self.url_base.rstrip('/')}/{weight_file.filename}"
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-able record (for manifests and docs)."""
        return {
            "name": self.name, "kind": self.kind, "repo_id": self.repo_id, "url_base": self.url_base,
            "revision": self.revision, "licence": self.licence, "label_space": self.label_space,
            "files": [{"filename": f.filename, "size": f.size, "sha256": f.sha256} for f in self.files],
            "architecture": dict(self.architecture), "made_by": self.made_by, "shipped_in": self.shipped_in,
        }


def _var_entry(depth: int, sha256: str, size: int | None, approx: str, parameters: int) -> WeightsEntry:
    return WeightsEntry(
        name=f"var_d{depth}", kind="var", repo_id="FoundationVision/var",
        files=(WeightFile(f"var_d{depth}.pth", size, sha256, approx),),
        licence="MIT", checksum_source=_VAR_CHECKSUMS, label_space="imagenet1k",
        architecture={"depth": depth, "embed_dim": 64 * depth, "num_heads": depth, "mlp_ratio": 4.0,
                      "num_classes": 1000, "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
                      "vqvae": "vae_ch160v4096z32", "resolution": 256, "parameters": parameters},
    )


_VAR_CHECKSUMS = ("git-lfs oids of FoundationVision/var, as pinned (revision 6d0ee659) in the public "
                  "github.com/amy499/var-scale-audit configs/*.yaml; not verified against the hub here")
_SD_VAE_ARCH = {"class": "diffusers.AutoencoderKL", "latent_channels": 4, "downsample": 8, "scaling_factor": 0.18215,
                "block_out_channels": [128, 256, 512, 512]}


def _shipped(name: str, kind: str, folder: str, filename: str, made_by: str, architecture: Mapping[str, Any],
             notes: str = "") -> WeightsEntry:
    """A row shipped in the package: read where it is; its sha256 is computed on use (the sidecar JSON
    beside it records the value it was made with)."""
    return WeightsEntry(name=name, kind=kind, files=(WeightFile(filename),), shipped_in=folder, made_by=made_by,
                        licence="MIT (ddbench)", label_space="dataset" if kind != "vqvae" else None,
                        checksum_source="shipped in the package; computed on use, recorded in the sidecar JSON",
                        architecture=architecture, notes=notes)


_ENTRIES: tuple[WeightsEntry, ...] = (
    WeightsEntry(
        name="vae_ch160v4096z32", kind="vqvae", repo_id="FoundationVision/var",
        files=(WeightFile("vae_ch160v4096z32.pth", 436_075_834,
                          "7c3ec27ae28a3f87055e83211ea8cc8558bd1985d7b51742d074fb4c2fcf186c", "436 MB"),),
        licence="MIT", checksum_source=_VAR_CHECKSUMS,
        architecture={"vocab_size": 4096, "z_channels": 32, "ch": 160, "ch_mult": [1, 1, 2, 2, 4],
                      "num_res_blocks": 2, "share_quant_resi": 4, "downsample": 16, "parameters": 108_948_355},
    ),
    _var_entry(16, "4f6151aad91c94e03e224dd7358d8389fa05301c0c291279566998efb54b0ecb", 1_243_116_346, "1.2 GB",
               310_283_520),
    _var_entry(20, "f7d232978e6fe82a4f2e0f5d82b012e01b1aa5abfe93ce2b56104ec0e878a10f", None, "2.4 GB", 600_917_136),
    _var_entry(24, "12c03619b2d3906ed19fe59539a90aadf60d72287dbaa31cf540435e76ddf789", None, "4.1 GB", 1_033_399_360),
    _var_entry(30, "7b11551dd4d794c7d6ed10b3d2822d42efe609a86128171b646e543dd2633b56", None, "8.0 GB", 2_010_020_356),
    WeightsEntry(
        name="dit_xl_2_256", kind="dit", url_base="https://dl.fbaipublicfiles.com/DiT/models",
        files=(WeightFile("DiT-XL-2-256x256.pt", None, None, "2.7 GB"),),
        licence="CC-BY-NC-4.0 (facebookresearch/DiT)", label_space="imagenet1k",
        checksum_source="none published by the DiT release; the sha256 is computed on first use and recorded",
        architecture={"model": "DiT-XL/2", "depth": 28, "hidden_size": 1152, "num_heads": 16, "patch_size": 2,
                      "input_size": 32, "learn_sigma": True, "num_classes": 1000, "resolution": 256,
                      "parameters": 675_129_632, "vae": "sd_vae_ft_mse or sd_vae_ft_ema"},
        notes="the official DiT checkpoint (the one Minimax fine-tunes); facebook/DiT-XL-2-256 on the hub holds "
              "the diffusers layout of the same model, not this file",
    ),
    WeightsEntry(
        name="sd_vae_ft_mse", kind="sd-vae", repo_id="stabilityai/sd-vae-ft-mse",
        files=(WeightFile("config.json", 547, "92d3dfb746fca211a2c9e019e285f8597412211728dce3c5bcf4eda0f2d62e7e"),
               WeightFile("diffusion_pytorch_model.safetensors", 334_643_276,
                          "a1d993488569e928462932c8c38a0760b874d166399b14414135bd9c42df5815", "335 MB")),
        licence="MIT", architecture=_SD_VAE_ARCH,
        checksum_source="git-lfs oids as pinned (revision 31f26fde) in public installer manifests; not verified "
                        "against the hub here",
    ),
    WeightsEntry(
        name="sd_vae_ft_ema", kind="sd-vae", repo_id="stabilityai/sd-vae-ft-ema",
        files=(WeightFile("config.json", 547, "92d3dfb746fca211a2c9e019e285f8597412211728dce3c5bcf4eda0f2d62e7e"),
               WeightFile("diffusion_pytorch_model.safetensors", None,
                          "32db726da04f06c1b6b14c0043ce115cc87a501482945c5add89a40d838fcb46", "335 MB")),
        licence="MIT", architecture=_SD_VAE_ARCH,
        checksum_source="git-lfs oids as pinned (revision f04b2c4b) in github.com/amy499/var-scale-audit "
                        "configs/dit_xl2_256.yaml; not verified against the hub here",
    ),
    # ----- classifiers a generator method scores its samples with (CaO2) -----
    WeightsEntry(
        name="resnet18_tv_in1k", kind="classifier", repo_id="timm/resnet18.tv_in1k",
        files=(WeightFile("model.safetensors", None, None, "46.8 MB"),),
        licence="BSD-3-Clause (torchvision)", label_space="imagenet1k",
        checksum_source="none recorded here; the sha256 is computed on first use and recorded",
        architecture={"model": "torchvision resnet18", "num_classes": 1000, "resolution": 224,
                      "state_dict": "torchvision key names (timm's tv_in1k copy of resnet18-f37072fd.pth)"},
        notes="torchvision's IMAGENET1K_V1 ResNet-18, the scorer CaO2's sample_*.py load with pretrained=True",
    ),
    # ----- shipped in the package (float16, trained or fine-tuned here on the digits dataset) -----
    _shipped("digits_vqvae", "vqvae", "generators/var/weights", "digits_vqvae.pt", "ddbench var reproduce-digits --out DIR",
             {"preset": "digits", "vocab_size": 256, "z_channels": 16, "ch": 32, "ch_mult": [1, 2],
              "patch_nums": [1, 2, 3, 4, 6, 8], "resolution": 16}),
    _shipped("digits_var", "var", "generators/var/weights", "digits_var.pt", "ddbench var reproduce-digits --out DIR",
             {"preset": "digits", "depth": 4, "embed_dim": 64, "num_heads": 4, "num_classes": 10,
              "patch_nums": [1, 2, 3, 4, 6, 8], "vqvae": "digits_vqvae"}),
    _shipped("digits_dit", "dit", "generators/dit/weights", "digits_dit.pt", "ddbench dit reproduce-digits --out DIR",
             {"preset": "digits", "depth": 6, "hidden_size": 96, "num_heads": 4, "patch_size": 1, "input_size": 8,
              "num_classes": 10, "codec": "bilinear2x"}),
    _shipped("digits_minimax", "dit-trainable-tensors", "methods/minimax/weights", "digits_minimax.pt",
             "ddbench minimax finetune --dataset digits --out DIR",
             {"base": "digits_dit", "holds": "the Minimax-trainable tensors of the fine-tuned EMA"},
             notes="made again on first use when it does not record the sha256 of digits_dit"),
    _shipped("digits_var_cls", "class-token-var", "methods/hieramp/weights", "digits_hieramp.pt",
             "ddbench hieramp finetune --dataset digits --out DIR",
             {"base": "digits_var", "class_tokens": 6, "class_head": 10},
             notes="made again on first use when its sidecar does not record the sha256 of digits_vqvae"),
)

#: fine-tuned class-token VARs are made locally (no release links one); their slots are named here
CLASS_TOKEN_SLOT = "var_d16_cls_{dataset}"


def class_token_slot(dataset: str, made_by: str, architecture: Mapping[str, Any] | None = None) -> WeightsEntry:
    """The slot of a class-token VAR fine-tuned from var_d16 for `dataset` (cache only, no download)."""
    name = CLASS_TOKEN_SLOT.format(dataset=dataset)
    return WeightsEntry(
        name=name, kind="class-token-var", files=(WeightFile(f"{name}.pth"),), licence="MIT (derived from var_d16)",
        checksum_source="made locally; the sha256 is computed on first use", label_space="imagenet1k",
        architecture=dict(architecture or {"base": "var_d16", "class_tokens": 10, "class_head": 1000}),
        made_by=made_by,
    )


#: name -> entry; the one registry every lookup reads
TABLE: dict[str, WeightsEntry] = {entry.name: entry for entry in _ENTRIES}


def get_entry(name: str) -> WeightsEntry:
    """The table entry called `name`, with a "did you mean" on typos."""
    if name in TABLE:
        return TABLE[name]
    close = difflib.get_close_matches(name, list(TABLE), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"no weights called {name!r}{hint}; known: {', '.join(TABLE)}")


def entry_for_hub_file(repo_id: str, filename: str) -> WeightsEntry:
    """The table entry of `repo_id/filename`, or an unlisted entry (no checksum) on the same path."""
    for entry in TABLE.values():
        if entry.repo_id == repo_id and any(f.filename == filename for f in entry.files):
            return entry if len(entry.files) == 1 else WeightsEntry(
                name=f"{entry.name}:{filename}", kind=entry.kind, repo_id=repo_id, revision=entry.revision,
                files=tuple(f for f in entry.files if f.filename == filename), licence=entry.licence)
    return WeightsEntry(name=f"{repo_id}/{filename}", kind="unlisted", repo_id=repo_id, files=(WeightFile(filename),),
                        checksum_source="not in ddbench's weights table: no checksum to compare")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _where_to_put(entry: WeightsEntry, option: str | None) -> str:
    lines = []
    for weight_file in entry.files:
        source = entry.url(weight_file) or f"`{entry.made_by}`"
        facts = ", ".join(x for x in (f"{weight_file.size:,} bytes" if weight_file.size else weight_file.approx_size,
                                      f"sha256 {weight_file.sha256}" if weight_file.sha256 else "") if x)
        lines.append(f"{weight_file.filename} ({facts}) from {source}" if facts else f"{weight_file.filename} from {source}")
    target = entry.cache_dir()
    instead = f", or pass {option}" if option else ""
    return f"put {'; '.join(lines)} into {target}/{instead}"


# ----- resolution -----
def resolve_weights(entry: WeightsEntry | str, explicit: str | os.PathLike | None = None, *,
                    progress: Progress = NullProgress(), option: str | None = None) -> Path:
    """The local path of `entry`'s weights: explicit path -> verified cache -> download.

    `option` names the override in messages (e.g. "--set var_ckpt=PATH"). Returns the file, or
    the folder for multi-file entries.
    """
    entry = get_entry(entry) if isinstance(entry, str) else entry
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise CheckpointError(f"{path} (given for {entry.name}) does not exist; fix the path or drop it to use "
                                  f"the cache ({entry.cache_path()})")
        return path
    if entry.shipped_in:
        missing = [f.filename for f in entry.files if not (entry.cache_dir() / f.filename).is_file()]
        if missing:
            raise CheckpointError(f"{entry.name}: {entry.cache_dir() / missing[0]} is missing from the package; reinstall "
                                  f"ddbench, or make it with `{entry.made_by}` and copy it there"
                                  + (f", or pass {option}" if option else ""))
        return entry.cache_path()
    missing = [f for f in entry.files if not (entry.cache_dir() / f.filename).is_file()]
    for weight_file in entry.files:
        if weight_file not in missing:
            _check_cached(entry, weight_file)
    if missing:
        if entry.url(missing[0]) is None:
            raise CheckpointError(f"{entry.name} is not in the cache and has no download: make it with "
                                  f"`{entry.made_by}`" + (f", or pass {option}" if option else ""))
        if _offline():
            raise FetchError(f"{entry.name} is not in the cache and HF_HUB_OFFLINE=1 forbids downloading it: "
                             + _where_to_put(entry, option))
        for weight_file in missing:
            download_file(entry, weight_file, progress=progress, option=option)
    return entry.cache_path()


def _check_cached(entry: WeightsEntry, weight_file: WeightFile) -> None:
    path = entry.cache_dir() / weight_file.filename
    if weight_file.sha256 is None:
        return
    actual = cached_sha256_file(path)
    if actual != weight_file.sha256:
        raise CheckpointError(f"{path} has sha256 {actual}, but {entry.name}'s {weight_file.filename} has "
                              f"{weight_file.sha256}; the file is damaged or another one: delete it to download again")


def download_file(entry: WeightsEntry, weight_file: WeightFile, *, progress: Progress = NullProgress(),
                  option: str | None = None) -> Path:
    """Download one file of `entry` to `<cache>/<file>.part`, check size and sha256, rename into place.

    A `.part` left by an interrupted download is resumed (HTTP Range) when the server allows it.
    Two processes that need the same file download it once: the second waits on a lock, then
    finds it in place.
    """
    destination = entry.cache_dir() / weight_file.filename
    with disk_errors(destination.parent, "create"):
        destination.parent.mkdir(parents=True, exist_ok=True)
    with locked(destination.with_name(f".{destination.name}.lock")):
        if destination.is_file():
            return destination
        return _download_file_locked(entry, weight_file, progress, option)


def _download_file_locked(entry: WeightsEntry, weight_file: WeightFile, progress: Progress, option: str | None) -> Path:
    try:
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
    except ImportError as exc:
        raise FetchError(f"downloading {entry.name} needs huggingface_hub: pip install 'ddbench[hub]', or "
                         + _where_to_put(entry, option)) from exc
    url = entry.url(weight_file)
    destination = entry.cache_dir() / weight_file.filename
    partial = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    headers = build_hf_headers() if entry.repo_id else {}
    headers["Accept-Encoding"] = "identity"
    digest, done = hashlib.sha256(), 0
    if partial.exists():
        with open(partial, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
                done += len(chunk)
        headers["Range"] = f"bytes={done}-"
    progress.log(f"downloading {entry.name}: {weight_file.filename} "
                 f"({weight_file.approx_size or 'size unknown'}) from {url} to {destination}")
    try:
        with get_session().stream("GET", url, headers=headers, timeout=60) as response:
            hf_raise_for_status(response)
            if done and response.status_code != 206:  # the server ignored Range: start over
                digest, done = hashlib.sha256(), 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length else weight_file.size
            with open(partial, "ab" if done else "wb") as out, \
                    progress.task(f"downloading {weight_file.filename}", total=total) as bar:
                bar.advance(done)
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    bar.advance(len(chunk))
    except Exception as exc:  # network, HTTP status, the hub's own offline switch: one line with the fix
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FetchError(f"cannot download {url} ({type(exc).__name__}: {detail}); check the network or "
                         f"HF_ENDPOINT, or download it elsewhere and {_where_to_put(entry, option)}") from exc
    return _finish(entry, weight_file, partial, destination, digest.hexdigest(), done, url)


def _finish(entry: WeightsEntry, weight_file: WeightFile, partial: Path, destination: Path, actual: str,
            size: int, url: str) -> Path:
    expected_size, expected = weight_file.size, weight_file.sha256
    if (expected_size is not None and size != expected_size) or (expected is not None and actual != expected):
        partial.unlink(missing_ok=True)
        raise FetchError(f"{url} does not match {entry.name}'s table entry: got {size:,} bytes with sha256 {actual}, "
                         f"expected {f'{expected_size:,} bytes' if expected_size else 'any size'} with sha256 "
                         f"{expected or 'any'}. The download was deleted; retry, and if the publisher changed the "
                         "file, pass it explicitly with --set ...ckpt=PATH")
    os.replace(partial, destination)
    return destination


def weights_record(entry: WeightsEntry, path: Path) -> dict[str, Any]:
    """What a run records about the weights it used: table name, where from, sha256 of every file."""
    files = [path] if path.is_file() else [path / f.filename for f in entry.files]
    return {"weights": entry.name, "path": str(path),
            "sha256": {f.name: cached_sha256_file(f) for f in files if f.is_file()}}


def known_sha256(entry: WeightsEntry | str) -> str | None:
    """sha256 of a one-file entry without downloading it: the published value, else the cached
    file's, else None (not here and none published). For run identities, before any loading."""
    entry = get_entry(entry) if isinstance(entry, str) else entry
    if len(entry.files) != 1:
        raise ConfigError(f"{entry.name} is a folder of {len(entry.files)} files; hash them one by one")
    if entry.files[0].sha256:
        return entry.files[0].sha256
    path = resolve_weights(entry) if entry.shipped_in else entry.cache_path()  # a shipped file must be there
    return cached_sha256_file(path) if path.is_file() else None


def shipped_record(entry: WeightsEntry | str, sidecar: str) -> dict[str, Any]:
    """The JSON record beside a shipped row's files (command, recipe, times, checks, sha256)."""
    entry = get_entry(entry) if isinstance(entry, str) else entry
    path = entry.cache_dir() / sidecar
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; reinstall ddbench or run `{entry.made_by}`")
    return json.loads(path.read_text())


def table_sha256(entry: WeightsEntry | str) -> str:
    """`known_sha256`, or `unpublished:<name>` for a released file neither published nor cached yet."""
    entry = get_entry(entry) if isinstance(entry, str) else entry
    return known_sha256(entry) or f"unpublished:{entry.name}"


def table_identity(**roles: WeightsEntry | str) -> Callable[[], dict[str, str]]:
    """A `GeneratorWeights.identity` made of rows: {role: sha256} without loading anything, e.g.
    `table_identity(generator="var_d16", vqvae="vae_ch160v4096z32")`."""
    return lambda: {role: table_sha256(entry) for role, entry in roles.items()}


# ----- generators made of rows -----
@dataclass(frozen=True)
class GeneratorWeights:
    """The generator a method samples for one dataset when the user gives no checkpoint: rows of the
    table (released, shipped or made here) with the loader of their format. Methods declare one per
    dataset they support (`default_weights`); each knows its class count, label space and the sha256
    of its files before anything is loaded, so the run identity and the manifest's class map exist
    before any heavy work."""

    description: str
    load: Callable[[Any, Any], tuple[Any, Any, dict]]  # (device, progress) -> (model, decoder/codec, info)
    identity: Callable[[], dict[str, str]]  # {role: sha256}, without loading anything
    num_classes: int
    label_space: str  # class_map.DATASET (the dataset's own labels) or class_map.IMAGENET1K


@dataclass(frozen=True)
class FirstUseFineTune:
    """A shipped row that holds only for the row it was made from: when the shipped file records another
    base sha256, the same file is made once on first use and cached under
    `$DDBENCH_HOME/cache/<cache>/<base sha256[:16]>/<file>`."""

    entry: str  # the shipped row
    base: str  # the row whose sha256 the shipped file records (and which keys the cache)
    cache: tuple[str, ...]  # e.g. ("dit", "digits")
    recorded_base: Callable[[Path], Optional[str]]  # the base sha256 a shipped file records, None if unknown

    @property
    def filename(self) -> str:
        return get_entry(self.entry).files[0].filename

    def base_sha256(self) -> str:
        return cached_sha256_file(resolve_weights(self.base))

    def cache_folder(self) -> Path:
        return cache_dir(self.cache[0]).joinpath(*self.cache[1:], self.base_sha256()[:16])

    def shipped_matches(self) -> bool:
        shipped = get_entry(self.entry).cache_path()
        return shipped.is_file() and self.recorded_base(shipped) == self.base_sha256()

    def source(self) -> Optional[Path]:
        """The file that holds for the base: shipped, else cached, else None (to be made)."""
        if self.shipped_matches():
            return get_entry(self.entry).cache_path()
        cached = self.cache_folder() / self.filename
        return cached if cached.is_file() else None

    def sha256(self, made_from: str, recipe: Any) -> str:
        """sha256 of `source()`; before it is made, `to-finetune:` a hash of the row it will be made from
        (`made_from`, by key) and the recipe (a dataclass)."""
        source = self.source()
        if source is not None:
            return cached_sha256_file(source)
        return f"to-finetune:{stable_hash({'base': table_sha256(made_from), 'recipe': asdict(recipe)}, 16)}"
