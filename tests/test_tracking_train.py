"""A tiny tracking run through the real engine: the BEiT / VideoMAEv2 LR / weight-decay hand-off, exact
resume, best.pt on AO, and tools/track.py on a video, a frame folder and the eval split (model and MIL)."""

from __future__ import annotations

import json

import cv2
import pytest
import torch
from mmengine.config import Config

from recipes.train.engine import Trainer
from tests.tracking_fixtures import frames_of, write_frames, write_got10k
from tools import track as track_tool

pytestmark = pytest.mark.slow  # a real (tiny) training run, twice, plus three tool runs: ~10 s on an idle CPU


def tiny_cfg(root) -> Config:
    return Config(dict(
        data_root=str(root),
        model=dict(type="videomae_tracker", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, patch_size=8, num_frames=2, tubelet_size=2),
        task=dict(type="tracking", template_size=16, search_size=32),
        data=dict(train=dict(type="tracking_pairs", exclude=["v"], samples_per_epoch=8, max_gap=3),
                  val=dict(type="tracking_sequences", sequences=["v"])),
        adapter="videomae",
        strategy=dict(type="layer_decay", lr=1e-3, decay=0.5, weight_decay=0.05),
        optimizer=dict(type="AdamW"),
        schedule=dict(type="cosine", warmup_steps=1, min_lr_ratio=0.1, weight_decay=0.05, weight_decay_end=0.2),
        train=dict(epochs=2, batch_size=4, seed=0, progress=False, tensorboard=False, num_threads=1, ckpt_every=1,
                   keep_ckpts=10),
    ))  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqs")
    for k, name in enumerate(("a", "b", "v")):
        write_got10k(root, name, n=8, seed=k)
    trainer = Trainer(tiny_cfg(root), root.parent / "run").setup()
    seen: list[list[tuple[str, float, float, float]]] = []
    trainer.task.on_step = lambda model, opt, step: seen.append(
        [(g["name"], g["lr"], g["lr_scale"], g["weight_decay"]) for g in opt.param_groups]
    )
    summary = trainer.train()
    return root, trainer, seen, summary


def test_every_group_follows_the_step_schedule(run):
    """The BEiT / VideoMAEv2 hand-off: each step, lr = schedule(step) x lr_scale for every group; the weight-decay schedule
    reaches exactly the groups with non-zero weight decay (the others stay at 0)."""
    _, trainer, seen, _ = run
    assert len(seen) == trainer.total_steps == 4
    decayed = {g["name"] for g in trainer.optimizer.param_groups if g["weight_decay"] > 0}
    assert decayed and decayed != {g["name"] for g in trainer.optimizer.param_groups}
    for step, groups in enumerate(seen):
        for name, lr, scale, wd in groups:
            assert lr == pytest.approx(trainer.schedule.value(step) * scale, rel=1e-12)
            assert wd == (pytest.approx(trainer.schedule.weight_decay_value(step)) if name in decayed else 0.0)
    head = [dict((g[0], g[1]) for g in s)["head.decay"] for s in seen]
    assert head[0] < head[1] > head[2] > head[3]  # warm-up, then cosine: never stuck at the initial LR
    wds = [dict((g[0], g[3]) for g in s)["head.decay"] for s in seen]
    assert wds[0] == pytest.approx(0.05) and wds[-1] == pytest.approx(0.2)  # cosine 0.05 -> 0.2 over the run


def test_resume_is_bit_exact_and_best_follows_ao(run, tmp_path):
    root, trainer, _, summary = run
    ckpts = sorted((root.parent / "run" / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts][:2] == ["step_0000001.pt", "step_0000002.pt"]
    resumed = Trainer(tiny_cfg(root), tmp_path / "resumed", resume=ckpts[1]).setup()
    assert resumed.step == 2
    resumed.train()
    full = trainer.bare_model().state_dict()
    for k, v in resumed.bare_model().state_dict().items():
        assert torch.equal(v, full[k]), k
    best = json.loads((root.parent / "run" / "best.json").read_text())
    assert best["metric"] == "AO" and 0.0 <= summary["best_AO"] <= 1.0 and "fps" in summary["val"]
    assert set(summary["val"]) >= {"AO", "SR0.50", "SR0.75", "success_auc", "precision@20", "norm_precision"}
    plots = root.parent / "run" / "plots"  # each evaluation's success / precision plots, in the work dir
    assert (plots / "success_plot.png").stat().st_size > 0 and (plots / "precision_plot.png").stat().st_size > 0


def test_track_tool_on_video_frames_and_eval(run, tmp_path):
    root, _, _, _ = run
    cfg_path = tmp_path / "tiny.py"
    tiny_cfg(root).dump(str(cfg_path))
    best = str(root.parent / "run" / "best.pt")
    frames, boxes = frames_of(6, seed=2)
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    out = tmp_path / "v"
    assert track_tool.main([str(cfg_path), best, "--video", str(video), "--init", "6,14,12,10", "--out", str(out)]) == 0
    assert len((out / "boxes.txt").read_text().splitlines()) == 6 and (out / "track.gif").stat().st_size > 0
    write_frames(tmp_path / "frames", frames)
    out2 = tmp_path / "mil"
    assert track_tool.main([str(cfg_path), "--tracker", "opencv_mil", "--frames", str(tmp_path / "frames"),
                            "--init", "6,14,12,10", "--out", str(out2), "--format", "mp4"]) == 0  # fmt: skip
    assert (out2 / "track.mp4").is_file()
    assert track_tool.main([str(cfg_path), best, "--eval", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["frames"] == 7
    assert (tmp_path / "e" / "success_plot.png").is_file() and (tmp_path / "e" / "v.txt").is_file()
    # nothing is overwritten; a bad --init is a one-line error (exit 2)
    assert track_tool.main([str(cfg_path), best, "--eval", "--out", str(tmp_path / "e")]) == 2
    assert track_tool.main([str(cfg_path), best, "--video", str(video), "--init", "60,40,12,10",
                            "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    # a step checkpoint loads too (same path as train: task.build_model, safe_load)
    step = str(sorted((root.parent / "run" / "checkpoints").glob("step_*.pt"))[-1])
    assert track_tool.main([str(cfg_path), step, "--eval", "--out", str(tmp_path / "s")]) == 0
    # a misspelt task option, a file that is not only tensors, a trainable-only checkpoint without model.pretrained: exit 2
    assert track_tool.main([str(cfg_path), best, "--eval", "--out", str(tmp_path / "y"),
                            "--cfg-options", "task.window_penlty=0.3"]) == 2  # fmt: skip
    import pickle

    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(pickle.dumps({"model": track_tool.BadInput("x")}))
    assert track_tool.main([str(cfg_path), str(crafted), "--eval", "--out", str(tmp_path / "z")]) == 2
    partial = tmp_path / "partial.pt"
    torch.save({"model": {}, "frozen_omitted": True}, partial)
    assert track_tool.main([str(cfg_path), str(partial), "--eval", "--out", str(tmp_path / "w")]) == 2
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in ("y", "z", "w"))


def save_videomae(path, seed):
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(seed)
    cfg = VideoMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         patch_size=8, num_frames=2, tubelet_size=2, image_size=32, use_mean_pooling=False)  # fmt: skip
    VideoMAEModel(cfg).save_pretrained(path)
    return str(path)


def test_trainable_only_best_pt_needs_and_checks_model_pretrained(run, tmp_path, capsys):
    """A linear-probe run from a VideoMAE folder: best.pt holds the head only (save_frozen='auto'); track.py
    rebuilds the backbone from model.pretrained and checks it against the run's fingerprint."""
    root = run[0]
    init, other = save_videomae(tmp_path / "vmae", 0), save_videomae(tmp_path / "vmae2", 1)
    cfg = tiny_cfg(root)
    cfg.model.update(pretrained=init, head_dim=8)
    cfg.policy = dict(type="linear_probe", head=r"^box_head\.")
    cfg.train.epochs = 1
    trainer = Trainer(cfg, tmp_path / "probe").setup()
    trainer.train()
    best_path = tmp_path / "probe" / "best.pt"
    best = torch.load(best_path, weights_only=True)
    head = {n for n, p in trainer.bare_model().named_parameters() if p.requires_grad}
    assert best["frozen_omitted"] and head <= set(best["model"]) and not any(k.startswith("videomae.encoder")
                                                                              for k in best["model"])  # fmt: skip
    cfg_path = tmp_path / "probe.py"
    cfg.dump(str(cfg_path))
    capsys.readouterr()
    assert track_tool.main([str(cfg_path), str(best_path), "--eval", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["frames"] == 7
    for opt, out, says in (("model.pretrained=None", "n", "holds only the trainable tensors (frozen_omitted)"),
                           (f"model.pretrained={other}", "o", "different frozen weights")):  # fmt: skip
        assert track_tool.main([str(cfg_path), str(best_path), "--eval", "--out", str(tmp_path / out),
                                "--cfg-options", opt]) == 2  # fmt: skip
        assert says in capsys.readouterr().err


def test_amp_accumulation_and_ema(run, tmp_path):
    root = run[0]
    cfg = tiny_cfg(root)
    cfg.train.update(epochs=1, batch_size=2, grad_accum=2, amp="bf16", ema=0.9, ckpt_every=None)
    summary = Trainer(cfg, tmp_path / "amp").setup().train()
    assert summary["steps"] == 2 and summary["final_loss"] > 0 and "ema_AO" in summary["val"]


def test_shipped_config_resumes_bit_exact_on_the_shared_set(shared_data, tmp_path):
    """configs/tracking/videomae_dinov2_cpu_shared.py on the real sequences from the real DINOv2 init, cut down to
    2 blocks and 2 x 4 steps: resuming from the step-4 checkpoint (a new process's view: a fresh Trainer)
    ends bit-exact with the uninterrupted run, and the eval on a real sequence is scored."""
    from pathlib import Path

    from tools.baselines.experiments import load_experiment
    from tools.reproduce import prepare_data

    paths = prepare_data(load_experiment("videomae_tracking"), shared_data, tmp_path / "data")
    from recipes.train.config import load_config

    cfg_path = Path(__file__).resolve().parents[1] / "configs" / "tracking" / "videomae_dinov2_cpu_shared.py"
    options = {"data_root": paths["tracking"], "model.pretrained": paths["dinov2"], "model.num_hidden_layers": 2,
               "data.train.samples_per_epoch": 16, "data.val.sequences": ["otb_Skiing"],
               "data.test.sequences": ["otb_Skiing"], "train.epochs": 2,
               "train.batch_size": 4, "train.ckpt_every": 4, "train.progress": False, "train.tensorboard": False,
               "schedule.warmup_steps": 2}  # fmt: skip

    def trainer(work_dir, resume=None):
        cfg = load_config(cfg_path)
        cfg.merge_from_dict(options)
        return Trainer(cfg, work_dir, resume=resume).setup()

    full = trainer(tmp_path / "full")
    summary = full.train()
    assert full.step == 8 and 0.0 < summary["val"]["AO"] <= 1.0
    assert summary["test"]["AO"] == pytest.approx(summary["val"]["AO"])  # the same sequence, the final model
    ckpt = tmp_path / "full" / "checkpoints" / "step_0000004.pt"
    resumed = trainer(tmp_path / "resumed", resume=ckpt)
    assert resumed.step == 4
    resumed.train()
    want = full.bare_model().state_dict()
    for k, v in resumed.bare_model().state_dict().items():
        assert torch.equal(v, want[k]), k
    last = [json.loads(line) for line in (tmp_path / "full" / "eval_log.jsonl").read_text().splitlines()][-1]
    again = [json.loads(line) for line in (tmp_path / "resumed" / "eval_log.jsonl").read_text().splitlines()][-1]
    assert again["AO"] == last["AO"]


def test_two_process_ddp_evaluation_gathers_every_sequence(tmp_path):
    """torchrun, 2 ranks (gloo): each rank tracks its share of the 3 eval sequences; the gathered metrics equal
    a one-process evaluation of the same weights (tools/track.py --eval on best.pt)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_train_cli import free_port

    root = Path(__file__).resolve().parents[1]
    for k, name in enumerate(("a", "b", "v1", "v2", "v3")):
        write_got10k(tmp_path / "seqs", name, n=8, seed=k)
    cfg = tiny_cfg(tmp_path / "seqs")
    cfg.data.train.exclude = ["v1", "v2", "v3"]
    cfg.data.val.sequences = ["v1", "v2", "v3"]
    cfg.train.update(epochs=1, eval_batch_size=1)
    cfg.dump(str(tmp_path / "tiny.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "tools/train.py", str(tmp_path / "tiny.py"), "--work-dir", str(tmp_path / "wd")]  # fmt: skip
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.split("[summary] ", 1)[1].splitlines()[0])
    assert sorted(summary["per_sequence"]) == ["v1", "v2", "v3"]
    assert [s["frames"] for s in summary["per_sequence"].values()] == [7, 7, 7]
    assert track_tool.main([str(tmp_path / "tiny.py"), str(tmp_path / "wd" / "best.pt"), "--eval",
                            "--out", str(tmp_path / "one")]) == 0  # fmt: skip
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for key in ("AO", "SR0.50", "SR0.75", "precision@20"):
        assert summary["val"][key] == pytest.approx(one[key], abs=1e-9), key
