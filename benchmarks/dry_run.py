"""The full-size dry run on a CPU (issue 18): the commands users type, at the sizes they run, with
random weights in the official layouts, on the real ImageWoof.

    python benchmarks/dry_run.py --data ../shared/data --out DIR [--deadline 11:45]

1. `weights`: random var_d16 + vae_ch160v4096z32 (VAR release layout), DiT-XL/2 (the DiT release's
   `.pt` layout), an SD-VAE-layout diffusers `AutoencoderKL` folder, a torchvision ResNet-18
   (CaO2's scorer), written as files; every later stage names them explicitly (`--from`,
   `--set var_ckpt=...`, `--set dit_ckpt=...`, `--set vae=FOLDER`, `--set scorer=FILE`): the weights
   table's explicit-path route.
2. The real CLI in a child process per stage (`ddbench hieramp finetune`, `ddbench teacher train`,
   `ddbench run --method ...`), at 256 px generation / 224 px data, with step counts cut by options
   and `--set`; model sizes are never cut.
3. For every stage: wall time, peak RSS of the child (`os.wait4`), a FLOP count (FlopCounterMode
   on meta-device models for one unit of each kind, times the units the stage runs) and the time
   those FLOPs imply on one A100 / H100 at the stated utilisation (an estimate, not a measurement).

Data: the encoders cost ~0.2 TFLOP per 256 px image, so the stages read class-folder subsets of
ImageWoof made of links to the real files (`OUT/data/`): the fine-tune K train and val images per
class, the runs (teacher, students' validation) N per class. The table says which.

A stage that finished is kept (`OUT/stages.json`) and not run again; a stage whose estimated CPU
time (its FLOPs at the rate measured so far) does not fit before `--deadline` (UTC) is recorded as
not run, with the reason. Results: `OUT/dry_run.json`, `OUT/dry_run.md`, logs in `OUT/logs/`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WOOF_SUBDIR = "imagewoof2"
#: dense bf16 peaks (TFLOP/s) without sparsity: A100 SXM 312, H100 SXM 989
GPU_PEAKS = {"A100": 312e12, "H100": 989e12}
GPU_UTILISATION = 0.40
#: the subsets the stages read (images per class): the fine-tune encodes at 256 px, the runs validate at 224
FINETUNE_IMAGES = {"train": 1, "val": 1}
EVAL_IMAGES = {"train": 20, "val": 20}
FINETUNE_STEPS, FINETUNE_BATCH = 2, 2
DIT_STEPS = 2
CAO2 = {"candidates_factor": 1, "refine_steps": 1, "refine_t_divisor": 1}  # t in 1..steps-1
#: d3hr: IPC 1 is refused and its 50-step grid is fixed; the inversion runs up to the statistics' row
#: (`stats_row` 0: t = 480, 24 guided steps; the default row 6 needs 30), generation from step 48 (2 steps)
D3HR = {"ipc": 2, "images_per_class": 2, "groups": 100, "groups_per_batch": 100, "start_step": 48, "stats_row": 0}
D3HR_INVERSION_STEPS = 24 + D3HR["stats_row"]  # methods.d3hr.ddim: KEPT_STEPS[stats_row] steps from t = 20


# ----- stage 1: random weights in the official layouts (run in a child process) -----
def make_weights(folder: Path) -> dict:
    import torch

    from ddbench.generators.dit.config import DIT_XL_2_256
    from ddbench.generators.dit.model import DiT
    from ddbench.generators.var.configs import VARConfig, VQVAEConfig
    from ddbench.generators.var.loading import build_var, build_vqvae

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    written = {}

    def save(state: dict, name: str) -> None:
        torch.save(state, folder / f"{name}.part")
        os.replace(folder / f"{name}.part", folder / name)
        written[name] = {"keys": len(state), "parameters": sum(v.numel() for v in state.values())}

    vqvae_config = VQVAEConfig()
    save(build_vqvae(vqvae_config).state_dict(), "vae_ch160v4096z32.pth")
    save(build_var(VARConfig.release(16), vqvae_config).state_dict(), "var_d16.pth")
    dit_state = {key: value for key, value in DiT(DIT_XL_2_256).state_dict().items()
                 if ".gamma" not in key}  # the release holds no Minimax gammas
    save(dit_state, "DiT-XL-2-256x256.pt")
    from diffusers.models import AutoencoderKL

    sd_vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=256,
                           block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    sd_vae.save_pretrained(folder / "sd-vae")
    written["sd-vae"] = {"parameters": sum(p.numel() for p in sd_vae.parameters())}
    import torchvision

    save(torchvision.models.resnet18(num_classes=1000).state_dict(), "resnet18_in1k.pth")
    return written


# ----- FLOPs: one unit of each kind, counted on meta-device models -----
def count_flops(function) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return float(counter.get_total_flops())


def unit_flops() -> dict[str, float]:
    """FLOPs of one forward of each model the stages run, at the size they run (meta tensors: no compute)."""
    import torch

    from ddbench.generators.dit.config import DIT_XL_2_256
    from ddbench.generators.dit.model import DiT
    from ddbench.generators.var.configs import VARConfig, VQVAEConfig
    from ddbench.generators.var.loading import build_vqvae
    from ddbench.methods.hieramp.model import ClassTokenVAR
    from ddbench.models import create_model

    units: dict[str, float] = {}
    meta = torch.device("meta")

    def on_meta(model):  # built on the CPU (buffers need real ops), counted on meta tensors
        return model.to(meta).eval()

    vqvae = on_meta(build_vqvae(VQVAEConfig()))
    labels = torch.zeros(1, dtype=torch.long, device=meta)
    tokens = [torch.zeros(1, n * n, dtype=torch.long, device=meta) for n in vqvae.patch_nums]
    with torch.no_grad():
        units["vqvae_encode_256"] = count_flops(lambda: vqvae.image_to_indices(torch.zeros(1, 3, 256, 256, device=meta)))
        units["vqvae_decode_256"] = count_flops(lambda: vqvae.indices_to_image(tokens))
        var = on_meta(ClassTokenVAR(VARConfig.release(16), vocab_size=4096, z_channels=32))
        teacher_input = vqvae.quantize.teacher_forcing_input(tokens)
        units["var_d16_forward"] = count_flops(lambda: var.forward_with_class_logits(labels, teacher_input))
        del var
        dit = on_meta(DiT(DIT_XL_2_256))
        latent, times = torch.zeros(1, 4, 32, 32, device=meta), torch.zeros(1, dtype=torch.long, device=meta)
        units["dit_xl2_forward"] = count_flops(lambda: dit(latent, times, labels))
        del dit
        from diffusers.models import AutoencoderKL

        sd_vae = on_meta(AutoencoderKL(latent_channels=4, sample_size=256, block_out_channels=(128, 256, 512, 512),
                                       layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                                       up_block_types=("UpDecoderBlock2D",) * 4))
        units["sd_vae_decode_256"] = count_flops(lambda: sd_vae.decode(torch.zeros(1, 4, 32, 32, device=meta)))
        units["sd_vae_encode_256"] = count_flops(lambda: sd_vae.encode(torch.zeros(1, 3, 256, 256, device=meta)))
        for arch in ("resnet18", "mobilenet_v2", "efficientnet_b0"):
            model = on_meta(create_model(arch, 10, 224))
            units[f"{arch}_forward_224"] = count_flops(lambda: model(torch.zeros(1, 3, 224, 224, device=meta)))
    return units


def student_flops(units: dict[str, float], students: list[str], train_images: int, val_images: int,
                  epochs: int = 1) -> float:
    """rded evaluation: per student, epochs x images x (3 x student forward + 1 teacher forward),
    the student and the teacher over the val split (the teacher's val pass is the run's accuracy check)."""
    teacher = units["resnet18_forward_224"]
    total = val_images * teacher
    for arch in students:
        student = units[f"{arch}_forward_224"]
        total += epochs * train_images * (3 * student + teacher) + val_images * student
    return total


def full_size_projection(units: dict[str, float]) -> list[tuple[str, float]]:
    """FLOPs of the uncut settings on the real split (9,025 train / 3,929 val), from the same units:
    what the stages above stand for. Estimates: sampling is counted as teacher-forced forwards."""
    u, train, val, classes, ipc = units, 9025, 3929, 10, 10
    dit_image = 50 * 2 * u["dit_xl2_forward"] + u["sd_vae_decode_256"]
    validations = 7  # rded: every 10 epochs in the last 20% of 300, and the last
    rded = (300 * ipc * classes * (3 * u["resnet18_forward_224"] + u["resnet18_forward_224"])
            + validations * val * u["resnet18_forward_224"])
    return [
        ("hieramp finetune, subset recipe (10 epochs, batch 64)",
         train * (10 * 3 * u["var_d16_forward"] + u["vqvae_encode_256"]) + val * (u["vqvae_encode_256"] + 2 * u["var_d16_forward"])),
        ("teacher ResNet-18, imagenet-scratch (200 epochs)", 200 * train * 3 * u["resnet18_forward_224"] + val * u["resnet18_forward_224"]),
        ("hieramp IPC 10 (distillation)", ipc * classes * (2 * u["var_d16_forward"] + u["vqvae_decode_256"])),
        ("dit or minimax IPC 10 (50 steps, distillation)", ipc * classes * dit_image),
        ("minimax finetune (8 epochs, batch 8; backward through every block)",
         train * (u["sd_vae_encode_256"] + 8 * 3 * u["dit_xl2_forward"])),
        ("cao2 IPC 10 (40 candidates/class, 100 refinement steps)",
         4 * ipc * classes * (dit_image + u["resnet18_forward_224"]) + ipc * classes * 100 * 3 * u["dit_xl2_forward"]),
        ("d3hr IPC 10 (every train image inverted to the default statistics row: 30 steps)",
         train * (u["sd_vae_encode_256"] + 30 * 2 * u["dit_xl2_forward"])
         + ipc * classes * (32 * 2 * u["dit_xl2_forward"] + u["sd_vae_decode_256"])),
        ("rded evaluation, one ResNet-18 student, IPC 10, 300 epochs", rded),
    ]


# ----- the stages -----
def subset(source: Path, target: Path, per_class: dict[str, int]) -> Path:
    """A class-folder copy of ImageWoof made of links to the first N files of each class (sorted names)."""
    for split, count in per_class.items():
        for class_dir in sorted((source / split).iterdir()):
            out = target / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for file in sorted(class_dir.iterdir())[:count]:
                link = out / file.name
                if not link.exists():
                    link.symlink_to(file)
    return target


def plan(out: Path, woof: Path, units: dict[str, float]) -> list[dict]:
    weights, data = out / "weights", out / "data"
    ft_root = subset(woof, data / "woof-finetune", FINETUNE_IMAGES)
    eval_root = subset(woof, data / "woof-eval", EVAL_IMAGES)
    classes = 10
    ddbench = [str(Path(sys.executable).parent / "ddbench")]
    common = ["--dataset", "woof", "--device", "cpu"]
    run_common = common + ["--ipc", "1", "--data-root", str(eval_root), "--results", str(out / "results.sqlite"),
                           "--teacher-ckpt", f"resnet18={out / 'teacher' / 'resnet18.pt'}",
                           "--set", "evaluator.epochs=1"]
    dit_set = ["--set", f"dit_ckpt={weights / 'DiT-XL-2-256x256.pt'}", "--set", f"vae={weights / 'sd-vae'}",
               "--set", f"steps={DIT_STEPS}"]
    val_eval = EVAL_IMAGES["val"] * classes
    u = units
    dit_image = DIT_STEPS * 2 * u["dit_xl2_forward"] + u["sd_vae_decode_256"]  # CFG: 2 forwards per step
    ft_train, ft_val = FINETUNE_IMAGES["train"] * classes, FINETUNE_IMAGES["val"] * classes
    three = ["resnet18", "mobilenet_v2", "efficientnet_b0"]
    d3hr_images = D3HR["images_per_class"] * classes
    stages = [
        {"name": "weights", "argv": [sys.executable, __file__, "--make-weights", str(weights)],
         "what": "random var_d16, vae_ch160v4096z32, DiT-XL/2, SD-VAE AutoencoderKL, ResNet-18 (1k) as files",
         "flops": 0.0, "flops_how": "initialisation only"},
        {"name": "hieramp finetune", "argv": ddbench + ["hieramp", "finetune", "--from", str(weights / "var_d16.pth"),
                                                        "--vqvae", str(weights / "vae_ch160v4096z32.pth"),
                                                        "--data-root", str(ft_root), "--out", str(out / "finetune"),
                                                        "--epochs", str(FINETUNE_STEPS * FINETUNE_BATCH / ft_train),
                                                        "--batch-size", str(FINETUNE_BATCH)] + common,
         "what": f"{FINETUNE_STEPS} steps of batch {FINETUNE_BATCH} at 256 px; encodes {ft_train} train + {ft_val} val "
                 f"images ({FINETUNE_IMAGES['train']}+{FINETUNE_IMAGES['val']}/class), class-head val accuracy",
         "flops": (ft_train + ft_val) * u["vqvae_encode_256"] + FINETUNE_STEPS * FINETUNE_BATCH * 3 * u["var_d16_forward"]
                  + ft_val * 2 * u["var_d16_forward"],
         "flops_how": "encodes + steps x batch x 3 x forward (fwd+bwd) + 2 val forwards per image"},
        {"name": "teacher (1 epoch)", "argv": ddbench + ["teacher", "train", "--arch", "resnet18", "--data-root",
                                                        str(eval_root), "--set", "epochs=1", "--set", "batch_size=32", "--force"] + common,
         "after": "copy_teacher", "weak_teacher": True,
         "what": f"ResNet-18 from scratch at 224 px, 1 epoch over {EVAL_IMAGES['train'] * classes} images; "
                 "WEAK TEACHER ACCEPTED (DDBENCH_DRY_RUN_ACCEPT_WEAK_TEACHER=1)",
         "flops": EVAL_IMAGES["train"] * classes * 3 * u["resnet18_forward_224"] + val_eval * u["resnet18_forward_224"],
         "flops_how": "images x 3 x forward + val forward"},
        {"name": "run hieramp", "argv": ddbench + ["run", "--method", "hieramp", "--students", ",".join(three),
                                                   "--set", f"var_ckpt={out / 'finetune' / 'var_hieramp.pth'}",
                                                   "--set", f"vqvae_ckpt={weights / 'vae_ch160v4096z32.pth'}",
                                                   "--set", "method.batch_size=10", "--out", str(out / "runs" / "hieramp")]
                                  + run_common, "weak_teacher": True,
         "what": f"IPC 1, 10 scales at 256 px, cfg 4; students {', '.join(three)} 1 epoch, val {val_eval} images",
         "flops": classes * (2 * u["var_d16_forward"] + u["vqvae_decode_256"]) + student_flops(u, three, classes, val_eval),
         "flops_how": "images x (2 x teacher-forced forward (CFG) + decode) + students"},
    ]
    for method in ("dit", "minimax", "hieramp-dit"):
        stages.append({
            "name": f"run {method}", "argv": ddbench + ["run", "--method", method, "--students", "resnet18",
                                                        "--out", str(out / "runs" / method)] + run_common + dit_set,
            "weak_teacher": True,
            "what": f"IPC 1, DiT-XL/2 {DIT_STEPS} of 50 steps, cfg 4, SD-VAE decode; student resnet18 1 epoch",
            "flops": classes * dit_image + student_flops(u, ["resnet18"], classes, val_eval),
            "flops_how": "images x (steps x 2 forwards + decode) + student"})
    cao2_candidates = CAO2["candidates_factor"] * classes
    stages.append({
        "name": "run cao2", "argv": ddbench + ["run", "--method", "cao2", "--students", "resnet18",
                                               "--set", f"scorer={weights / 'resnet18_in1k.pth'}",
                                               "--out", str(out / "runs" / "cao2")]
                                 + run_common + dit_set + [x for k, v in CAO2.items() for x in ("--set", f"{k}={v}")],
        "weak_teacher": True,
        "what": f"IPC 1, {cao2_candidates} candidates x {DIT_STEPS} steps, scorer ResNet-18 (1k, file), "
                f"{CAO2['refine_steps']} refinement step(s); student resnet18 1 epoch",
        "flops": cao2_candidates * (dit_image + u["resnet18_forward_224"])
                 + classes * CAO2["refine_steps"] * 3 * u["dit_xl2_forward"]
                 + student_flops(u, ["resnet18"], classes, val_eval),
        "flops_how": "candidates x (sampling + decode + score) + refine steps x 3 forwards + student"})
    full_val = sum(1 for _ in (woof / "val").glob("*/*"))
    stages.append({
        "name": "teacher check, full val (streamed)",
        "argv": ddbench + ["teacher", "check", "--arch", "resnet18", "--teacher-ckpt", str(out / "teacher" / "resnet18.pt"),
                           "--data-root", str(woof)] + common,
        "weak_teacher": True, "env": {"DDBENCH_VAL_IN_MEMORY_MB": "64"},
        "what": f"the teacher's top-1 on the whole real val split ({full_val:,} images at 224 px), streamed from disk "
                "(DDBENCH_VAL_IN_MEMORY_MB=64), as ImageNet-1K's val always is",
        "flops": full_val * u["resnet18_forward_224"], "flops_how": "val images x forward"})
    d3hr_run = list(run_common)
    d3hr_run[d3hr_run.index("--ipc") + 1] = str(D3HR["ipc"])
    stages.append({
        "name": "run d3hr", "argv": ddbench + ["run", "--method", "d3hr", "--students", "resnet18",
                                               "--out", str(out / "runs" / "d3hr")] + d3hr_run
                                 + ["--set", f"dit_ckpt={weights / 'DiT-XL-2-256x256.pt'}", "--set", f"vae={weights / 'sd-vae'}"]
                                 + [x for k, v in D3HR.items() if k != "ipc" for x in ("--set", f"{k}={v}")],
        "weak_teacher": True,
        "what": f"IPC {D3HR['ipc']} (1 is refused), {D3HR['images_per_class']} images/class inverted on the fixed "
                f"50-step grid up to the statistics' row {D3HR['stats_row']} ({D3HR_INVERSION_STEPS} steps x cfg), "
                f"generation from step {D3HR['start_step']}; student resnet18 1 epoch",
        "flops": d3hr_images * (u["sd_vae_encode_256"] + D3HR_INVERSION_STEPS * 2 * u["dit_xl2_forward"])
                 + classes * D3HR["ipc"] * ((50 - D3HR["start_step"]) * 2 * u["dit_xl2_forward"] + u["sd_vae_decode_256"])
                 + student_flops(u, ["resnet18"], classes * D3HR["ipc"], val_eval),
        "flops_how": "encode + inversion steps x 2 forwards per image, generation steps, decodes, student"})
    return stages


def copy_teacher(out: Path) -> None:
    """The teacher stage trains into the cache of OUT/home; the runs name its file explicitly."""
    import shutil

    found = sorted((out / "home" / "teachers" / "woof").glob("resnet18-*.pt"))
    if not found:
        raise RuntimeError(f"no teacher under {out / 'home' / 'teachers' / 'woof'}")
    (out / "teacher").mkdir(exist_ok=True)
    shutil.copyfile(found[0], out / "teacher" / "resnet18.pt")


def run_stage(stage: dict, out: Path) -> dict:
    """Run one stage's command in a child; its peak RSS is the child's `ru_maxrss`. Linux folds the
    forking process's high-water RSS into the child's at exec, so this process never imports torch
    (the FLOP units are counted in a child of their own): its ~20 MB are the floor of every figure."""
    log = out / "logs" / (stage["name"].split(" (")[0].replace(" ", "-") + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "DDBENCH_HOME": str(out / "home"),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TERM": "dumb"}
    env.update(stage.get("env", {}))
    if stage.get("weak_teacher"):
        env["DDBENCH_DRY_RUN_ACCEPT_WEAK_TEACHER"] = "1"
    started = time.time()
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(stage["argv"]) + "\n")
        handle.flush()
        child = subprocess.Popen(stage["argv"], stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    record = {"status": "ok" if child.returncode == 0 else f"failed (exit {child.returncode})",
              "wall_s": round(time.time() - started, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
              "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "log": str(log.relative_to(out)),
              "finished": dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")}
    if child.returncode == 0 and stage.get("after") == "copy_teacher":
        copy_teacher(out)
    return record


def fmt_time(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def table(stages: list[dict], records: dict[str, dict]) -> str:
    lines = ["| stage | what (sizes) | status | wall | CPU time | peak RSS | FLOPs | CPU rate | est. A100 | est. H100 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for stage in stages:
        record = records.get(stage["name"], {"status": "not run"})
        flops = stage["flops"]
        gpu = [fmt_time(flops / (GPU_PEAKS[g] * GPU_UTILISATION)) if flops else "-" for g in ("A100", "H100")]
        wall = record.get("wall_s")
        rate = f"{flops / record['cpu_s'] / 1e9:.0f} GFLOP/s" if flops and record.get("cpu_s") and record["status"] == "ok" else "-"
        lines.append(f"| {stage['name']} | {stage['what']} | {record['status']} | {fmt_time(wall) if wall else '-'} | "
                     f"{fmt_time(record['cpu_s']) if record.get('cpu_s') else '-'} | "
                     f"{str(record['peak_rss_gb']) + ' GB' if record.get('peak_rss_gb') else '-'} | "
                     f"{flops / 1e12:.1f} T | {rate} | {gpu[0]} | {gpu[1]} |")
    return "\n".join(lines)


def projection_table(units: dict[str, float]) -> str:
    lines = ["| uncut setting (estimate from FLOPs) | FLOPs | est. A100 | est. H100 |", "|---|---|---|---|"]
    for name, flops in full_size_projection(units):
        gpu = [fmt_time(flops / (GPU_PEAKS[g] * GPU_UTILISATION)) for g in ("A100", "H100")]
        lines.append(f"| {name} | {flops / 1e15:.2f} P | {gpu[0]} | {gpu[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder holding imagewoof2/ (or imagewoof2 itself)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: stages that would not finish by then are not run")
    parser.add_argument("--only", default=None, help="comma-separated stage names to run (default: all)")
    parser.add_argument("--make-weights", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--unit-flops", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_weights:
        print(json.dumps(make_weights(args.make_weights), indent=2))
        return
    if args.unit_flops:
        args.unit_flops.write_text(json.dumps(unit_flops(), indent=2))
        return
    if args.out is None:
        parser.error("--out is required")
    woof = args.data / WOOF_SUBDIR if (args.data / WOOF_SUBDIR).is_dir() else args.data
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    units_path = out / "unit_flops.json"
    if not units_path.is_file():  # in a child: this process must stay small (see run_stage)
        subprocess.run([sys.executable, __file__, "--unit-flops", str(units_path)], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    units = json.loads(units_path.read_text())
    stages = plan(out, woof.resolve(), units)
    state_path = out / "stages.json"
    records = json.loads(state_path.read_text()) if state_path.is_file() else {}
    only = set(args.only.split(",")) if args.only else None
    for stage in stages:
        if records.get(stage["name"], {}).get("status") == "ok" or (only and stage["name"] not in only):
            continue
        if args.deadline:
            now = dt.datetime.now(dt.timezone.utc)
            hour, minute = map(int, args.deadline.split(":"))
            left = (now.replace(hour=hour, minute=minute, second=0) - now).total_seconds()
            done = [(s["flops"], records[s["name"]]["wall_s"]) for s in stages
                    if records.get(s["name"], {}).get("status") == "ok" and s["flops"]]
            rate = sum(f for f, _ in done) / sum(w for _, w in done) if done else None
            if rate and stage["flops"] / rate > left:
                records[stage["name"]] = {"status": f"not run: ~{fmt_time(stage['flops'] / rate)} at the "
                                                    f"{rate / 1e9:.0f} GFLOP/s measured here, {fmt_time(max(left, 0))} left"}
                continue
        print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {stage['name']}: {stage['what']}", flush=True)
        records[stage["name"]] = run_stage(stage, out)
        print(f"    -> {records[stage['name']]}", flush=True)
        state_path.write_text(json.dumps(records, indent=2))
    state_path.write_text(json.dumps(records, indent=2))
    report = {"units_flops": units, "gpu_assumption": f"dense bf16 peak x {GPU_UTILISATION:.0%}: "
                                                      + ", ".join(f"{g} {p / 1e12:.0f} TFLOP/s" for g, p in GPU_PEAKS.items()),
              "stages": [{**{k: v for k, v in s.items() if k != "argv"}, "command": " ".join(s["argv"]),
                          **records.get(s["name"], {"status": "not run"})} for s in stages]}
    (out / "dry_run.json").write_text(json.dumps(report, indent=2))
    report["full_size_projection"] = dict(full_size_projection(units))
    (out / "dry_run.json").write_text(json.dumps(report, indent=2))
    text = table(stages, records) + "\n\n" + projection_table(units)
    (out / "dry_run.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
