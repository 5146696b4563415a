"""The diffusion task on 2 processes (torchrun, gloo, CPU): DDP for every family, FSDP2 for full and LoRA runs.

Each 2-process run (batch B per rank) is compared with a 1-process run of batch 2 x B on the same data:
per-sample draws (recipes/train/diffusion/draws.py) and the sampler's round-robin deal make the two
see the same samples with the same noise, so the logged losses agree step for step.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipes.train.config import load_config
from recipes.train.engine import Trainer
from tests.test_diffusion_task import CONFIG_OF, photos, pipeline_dir, videos
from tests.test_train_cli import free_port

pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")
ROOT = Path(__file__).resolve().parents[1]
TRAINABLE = ["sd15", "sdxl", "sd3", "flux", "flux2", "flux2_dev", "chroma", "zimage", "wan", "ltx2"]
VIDEO_SIDE = {"wan": 16, "ltx2": 32}  # 5-frame clips; LTX-2's pipeline asks for multiples of 32 px


def options(family: str, steps: int, batch: int, **extra: object) -> list[str]:
    """``--cfg-options`` of a short run of ``family``'s shipped config on a tiny pipeline and real photos."""
    side = VIDEO_SIDE.get(family)
    data = videos() if side else photos()
    res = (
        [f"data.train.resolution=({side},{side})", "data.train.num_frames=5"] if side else ["data.train.resolution=32"]
    )
    opts = [f"model.pretrained={pipeline_dir(family)}", f"data_root={data}", "model.dtype=float32",
            f"train.max_steps={steps}", f"train.batch_size={batch}", "train.grad_accum=1", "train.progress=False",
            "train.tensorboard=False", "train.log_every=1", "train.num_threads=1", "task.cache_dir=None",
            "task.samples.prompts=[]", "schedule.warmup_steps=0", "task.caption_dropout=0.5", *res]  # fmt: skip
    return opts + [f"{k}={v}" for k, v in extra.items()]


def config_path(family: str, kind: str = "lora") -> str:
    return str(ROOT / "configs" / "diffusion" / f"{CONFIG_OF.get(family, family)}_{kind}.py")


def one_process(family: str, work_dir: Path, opts: list[str], kind: str = "lora") -> Trainer:
    trainer = Trainer(load_config(config_path(family, kind), opts), work_dir).setup()
    trainer.train()
    return trainer


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def torchrun_cmd(config: str, work_dir: Path, opts: list[str], resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            "tools/train.py", config, "--work-dir", str(work_dir), "--cfg-options", *opts,
            *(["--resume"] if resume else [])]  # fmt: skip


def torchrun(config: str, work_dir: Path, opts: list[str], resume: bool = False) -> subprocess.CompletedProcess:
    cmd = torchrun_cmd(config, work_dir, opts, resume)
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)


def logged_losses(work_dir: Path) -> list[float]:
    with open(work_dir / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow  # two torchrun processes per family, each importing torch + diffusers: 20-60 s each
@pytest.mark.parametrize("family", TRAINABLE)
def test_ddp_two_processes_give_the_one_process_losses(family, tmp_path):
    """``torchrun --nproc_per_node 2`` with batch 1 per rank == one process with batch 2, loss for loss."""
    steps = 3
    ref = one_process(family, tmp_path / "one", options(family, steps, batch=2))
    done = torchrun(config_path(family), tmp_path / "two", options(family, steps, batch=1))
    assert done.returncode == 0, done.stderr[-3000:]
    want = [loss for _, loss in ref.history]
    assert len(want) == steps and len(set(want)) == steps  # the losses change from step to step
    assert logged_losses(tmp_path / "two") == pytest.approx(want, rel=1e-4, abs=1e-6)


# ----------------------------------------------------------------------------------------------- FSDP
def group_table(optimizer_state: dict) -> dict[str, tuple]:
    """``{parameter name: (group name, lr, lr_scale, weight_decay)}`` of a saved optimizer state (plain: the
    ``param_names`` torch saves; FSDP: the state is keyed by name)."""
    out = {}
    for g in optimizer_state["param_groups"]:
        for name in g.get("param_names") or g["params"]:
            out[name] = (g["name"], g["lr"], g["lr_scale"], g["weight_decay"])
    return out


def saved(work_dir: Path, name: str) -> dict:
    return torch.load(work_dir / name, map_location="cpu", weights_only=True)


@pytest.mark.slow  # 1 + 2 processes training a tiny Flux for 3 steps: ~60-120 s on a shared CPU
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_fsdp_two_processes_equal_the_one_process_run(kind, tmp_path):
    """Flux.1 under FSDP2 x 2 (batch 1, 2 accumulation steps, EMA, clipping) == one process with batch 2: the
    losses step for step, every parameter's group / lr / lr_scale / weight decay, the checkpointed weights,
    EMA and best.pt, and the exported transformer (full) or LoRA."""
    from diffusers import FluxTransformer2DModel

    from tools.export_diffusion import main as export_diffusion

    extra = {
        "train.amp": None,
        "train.grad_accum": 2,
        "train.ema": 0.9,
        "train.ckpt_every": 1,
        "train.clip_grad": 0.01,
        "train.eval_batch_size": 2,
    }  # the fixed-noise evaluation draws per batch: the same batches in both runs
    one = one_process("flux", tmp_path / "one", options("flux", 3, 2, **extra, **{"train.fsdp": False}), kind)
    done = torchrun(config_path("flux", kind), tmp_path / "two", options("flux", 3, 1, **extra, **{"train.fsdp": True}))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[fsdp] FSDPFluxTransformer2DModel: 3 blocks + the root sharded over 2 processes" in done.stdout
    want = [loss for _, loss in one.history]
    assert len(set(want)) == 3 and logged_losses(tmp_path / "two") == pytest.approx(want, rel=1e-5, abs=1e-7)
    a, b = (saved(tmp_path / w / "checkpoints", "step_0000003.pt") for w in ("one", "two"))
    assert b["fsdp"] and b["frozen_omitted"] == (kind == "lora") and set(b["model"]) == set(a["model"])
    table = group_table(a["optimizer"])
    assert len(table) == sum(p.requires_grad for p in one.bare_model().parameters())
    sharded = group_table(b["optimizer"])
    assert set(sharded) == set(table)
    for name, (group, *numbers) in table.items():  # same group, lr, lr_scale, weight decay for every parameter
        assert sharded[name][0] == group and sharded[name][1:] == pytest.approx(numbers, rel=1e-12)
    start = FluxTransformer2DModel.from_pretrained(pipeline_dir("flux"), subfolder="transformer").state_dict()
    for key in ("model", "ema"):
        moved = max(float((a[key][n] - start[n]).abs().max()) for n in a[key] if n in start) if kind == "full" else \
            max(float(v.abs().max()) for n, v in a[key].items() if "lora_B" in n)  # fmt: skip
        assert moved > 0
        for n, v in a[key].items():
            torch.testing.assert_close(b[key][n], v, rtol=0, atol=1e-2 * moved)  # float32 rounding: ~0.2 %
    best_a, best_b = saved(tmp_path / "one", "best.pt"), saved(tmp_path / "two", "best.pt")
    assert (best_b["step"], best_b["weights"], set(best_b["model"])) == (
        best_a["step"],
        best_a["weights"],
        set(best_a["model"]),
    )
    for w in ("one", "two"):  # best.pt through the export tool, as a user exports it
        args = [str(tmp_path / w / "config.py"), str(tmp_path / w / "best.pt"), "--out", str(tmp_path / w / "best")]
        assert export_diffusion(args) == 0
    for folder in ("transformer", "best") if kind == "full" else ("lora", "best"):
        a, b = (denoiser_weights(tmp_path / w / folder, kind) for w in ("one", "two"))
        assert a and set(a) == set(b)
        for n, v in a.items():
            torch.testing.assert_close(b[n], v, rtol=1e-4, atol=1e-6)


def denoiser_weights(folder: Path, kind: str) -> dict[str, torch.Tensor]:
    """An exported full denoiser (``from_pretrained``) or LoRA file, as a state dict."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import load_file

    if kind == "full":
        return FluxTransformer2DModel.from_pretrained(folder).state_dict()
    return load_file(folder / "pytorch_lora_weights.safetensors")


@pytest.mark.slow  # 3 torchrun launches of a tiny Flux LoRA: 4-8 min on a busy shared CPU
def test_fsdp_run_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    """SIGKILL to a 2-process FSDP run once a checkpoint exists; ``--resume`` continues it: every logged loss and
    the saved LoRA equal those of the run that was never interrupted."""
    import signal
    import time

    from safetensors.torch import load_file

    opts = options(
        "flux", 6, 1, **{"train.fsdp": True, "train.ckpt_every": 1, "train.keep_ckpts": 10, "train.ema": 0.9}
    )
    straight = torchrun(config_path("flux"), tmp_path / "a", opts)
    assert straight.returncode == 0, straight.stderr[-3000:]
    ckpts = tmp_path / "b" / "checkpoints"
    proc = subprocess.Popen(torchrun_cmd(config_path("flux"), tmp_path / "b", opts), cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while proc.poll() is None and not (ckpts / "step_0000002.pt").exists():
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run
    finally:
        proc.wait(timeout=60)
    assert not (ckpts / "step_0000006.pt").exists()
    resumed = torchrun(config_path("flux"), tmp_path / "b", opts, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[resume]" in resumed.stdout
    assert logged_losses(tmp_path / "b") == pytest.approx(logged_losses(tmp_path / "a"), rel=1e-6, abs=1e-8)
    a, b = (load_file(tmp_path / w / "lora" / "pytorch_lora_weights.safetensors") for w in ("a", "b"))
    assert a and all(torch.allclose(b[n], v, rtol=1e-6, atol=1e-9) for n, v in a.items())


def test_fsdp_without_torchrun_is_one_error(tmp_path, capsys):
    from tools.train import main

    argv = [config_path("flux", "full"), "--work-dir", str(tmp_path / "wd"), "--cfg-options", "model.pretrained=x"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: train.fsdp=True shards the model over processes: launch with torchrun")
    assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        ({"compile": True}, r"train.compile with train.fsdp=True is not supported"),
        ({"log_grad_norms": True}, r"train.log_grad_norms with train.fsdp=True is not supported"),
        ({"amp": "fp16"}, r"train.amp='fp16' with train.fsdp=True is not supported"),
        ({"fsdp": False, "compile": True}, None),
        ({}, None),
    ],
)
def test_fsdp_option_checks(option, message, monkeypatch):
    from recipes.train.config import TRAIN_DEFAULTS
    from recipes.train.errors import BadInput
    from recipes.train.fsdp import check_options

    monkeypatch.setenv("LOCAL_RANK", "0")
    opts = {**TRAIN_DEFAULTS, "fsdp": True, **option}
    if message is None:
        check_options(opts, 2, {}, {})
    else:
        with pytest.raises(BadInput, match=message):
            check_options(opts, 2, {}, {})
    with pytest.raises(BadInput, match="strategy.log_grad_norms with train.fsdp=True"):
        check_options({**TRAIN_DEFAULTS, "fsdp": True}, 2, {"log_grad_norms": True}, {})


def test_sharded_groups_keep_every_parameters_name_and_settings(tmp_path):
    """fully_shard on a one-process gloo group: every group, re-pointed at the DTensor parameters, holds the
    parameters of the same names with the same lr / lr_scale / weight decay, and the optimizer steps them."""
    import torch.distributed as dist
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig
    from torch.distributed.tensor import DTensor

    from recipes.param_groups import build_param_groups
    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.fsdp import repoint_groups, shard, shard_units
    from recipes.train.optimizers import build_optimizer

    model = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
                                   num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16,
                                   guidance_embeds=True, axes_dims_rope=(2, 2, 4)).requires_grad_(False)  # fmt: skip
    model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=FAMILIES["flux"].lora_targets))
    groups = build_param_groups(model, load_config(config_path("flux")).strategy)
    before = {n: p for n, p in model.named_parameters()}
    ids = {id(p): n for n, p in before.items()}
    table = [(g["name"], g["lr"], g["lr_scale"], g["weight_decay"], [ids[id(p)] for p in g["params"]]) for g in groups]
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        assert len(shard_units(model)) == 3  # 1 double-stream + 2 single-stream blocks
        shard(model, torch.device("cpu"))
        moved = repoint_groups(groups, ids, model)
        after = dict(model.named_parameters())
        assert set(after) == set(before) and all(isinstance(p, DTensor) for p in after.values())
        now = {id(p): n for n, p in after.items()}
        assert [(g["name"], g["lr"], g["lr_scale"], g["weight_decay"], [now[id(p)] for p in g["params"]]) for g in moved] \
            == table  # fmt: skip
        optimizer = build_optimizer(moved, None)
        lora = next(p for n, p in after.items() if "lora_A" in n)
        lora.grad = torch.ones_like(lora)
        old = lora.detach().full_tensor().clone()
        optimizer.step()
        assert not torch.equal(lora.detach().full_tensor(), old)
    finally:
        dist.destroy_process_group()
