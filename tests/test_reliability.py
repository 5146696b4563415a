"""Issue 10's cases, each reproduced for real: crafted files run no code, no user file is lost, every
bad input ends with one clear line and a documented exit code, interruption and resume are exact.

Images are real photos (scikit-image's bundled ``chelsea`` / ``coffee`` / ``astronaut``), training runs a
real timm ViT (tiny) on scikit-learn's digits, checkpoints are the engine's own.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from recipes.train.checkpoint import latest_checkpoint, safe_load, save_atomic
from recipes.train.engine import NonFiniteLoss, Trainer
from recipes.train.errors import BadInput
from recipes.train.workdir import RUN_MARKER
from tools import detect, show_lr, voc2coco
from tools import train as train_tool

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.py")
TINY = ["model.depth=2", "model.embed_dim=32", "model.num_heads=2", "model.patch_size=4", "train.progress=False",
        "train.tensorboard=False", "train.num_threads=1", "data.train.holdout=0.9", "data.train.part=main",
        "schedule.warmup_epochs=0"]  # fmt: skip
TINY_MODEL = dict(type="timm", name="vit_tiny_patch16_224", img_size=8, patch_size=4, in_chans=1, depth=2,
                  embed_dim=32, num_heads=2, drop_rate=0.1)  # fmt: skip


def tiny_cfg(**train) -> Config:
    """126 digits, batch 16: 7 steps per epoch, with a val split (the engine's own test setup)."""
    return Config(dict(
        model=copy.deepcopy(TINY_MODEL),
        task=dict(type="classification"),
        data=dict(train=dict(type="digits", split="train", holdout=0.9, part="main"),
                  val=dict(type="digits", split="val")),
        strategy=dict(type="layer_decay", lr=2e-3, decay=0.75, weight_decay=0.05),
        optimizer=dict(type="AdamW"),
        schedule=dict(type="cosine", warmup_steps=3, min_lr_ratio=0.01),
        train=dict(dict(epochs=2, batch_size=16, seed=3, progress=False, tensorboard=False, num_threads=1), **train),
    ))  # fmt: skip


def train_cli(work_dir: Path, *options: str, resume: str | None = None, config: str = DEFAULT) -> int:
    argv = [config, "--work-dir", str(work_dir), "--cfg-options", *TINY, *options]
    return train_tool.main(argv + (["--resume", resume] if resume else []))


def one_error_line(err: str) -> str:
    """The tool printed exactly one ``error:`` line and no traceback; returns it."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


class Payload:
    """Unpickling this runs ``touch <path>``: proof of code execution if the file appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def photos(folder: Path, n: int = 4, size: tuple[int, int] | None = None, ext: str = ".jpg") -> list[Path]:
    """Real photos from scikit-image's bundled data, written as files (optionally resized)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    sources = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    out = []
    for i in range(n):
        im = Image.fromarray(sources[i % len(sources)])
        if size:
            im = im.resize(size)
        path = folder / f"photo_{i}{ext}"
        im.save(path)
        out.append(path)
    return out


# ============================================================================ code execution, data loss
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy_pickle"])
def test_crafted_checkpoint_runs_no_code_in_any_tool(tmp_path, capsys, legacy):
    flag = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "step": 1, "x": Payload(flag)}, evil,
               _use_new_zipfile_serialization=not legacy)  # fmt: skip
    cfg = str(ROOT / "configs" / "rfdetr_ft.py")
    assert detect.main([cfg, str(evil), str(tmp_path / "img.jpg"), "--out-dir", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "refused without running any of it" in line and "posix.system" in line
    assert train_cli(tmp_path / "wd", "train.max_steps=1", resume=str(evil)) == 2
    assert "refused without running any of it" in one_error_line(capsys.readouterr().err)
    assert not flag.exists()


def test_checkpoint_allow_list_admits_rfdetr_namespace_and_nothing_else(tmp_path):
    """rfdetr's published checkpoints carry their training args as an argparse.Namespace."""
    ok = tmp_path / "rfdetr_like.pt"
    torch.save({"model": {"class_embed.bias": torch.zeros(3)}, "args": argparse.Namespace(lr=1e-4, classes=["a"])}, ok)
    assert safe_load(ok)["args"].classes == ["a"]
    other = tmp_path / "path.pt"
    torch.save({"model": {}, "where": Path("/tmp")}, other)
    with pytest.raises(BadInput, match="refused without running"):
        safe_load(other)


def test_every_torch_load_in_the_tree_is_weights_only():
    offenders = []
    for path in [*ROOT.glob("recipes/**/*.py"), *ROOT.glob("tools/*.py"), *ROOT.glob("zoo/*.py")]:
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{k}")
            if "pickle.load(" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{k}")
    assert not offenders


def _cifar_folder(root: Path, batch: object) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # CIFAR's own files are Python 2 pickles
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    return folder


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_reader_reads_real_batches_and_refuses_a_crafted_one(tmp_path, protocol):
    from skimage import data as photos_data

    from recipes.train.data.classification import cifar10

    photo = photos_data.astronaut()[:256:, :256]  # 8 real 32x32 patches of a photo, in CIFAR's CHW-flat rows
    data = np.stack([photo[32 * i : 32 * i + 32, :32].transpose(2, 0, 1).reshape(-1) for i in range(8)])
    folder = _cifar_folder(tmp_path / "ok", {"data": data, "labels": list(range(8)), "batch_label": "b"})
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": data, "labels": list(range(8))}, f, protocol=protocol)
    ds = cifar10(tmp_path / "ok")
    assert len(ds) == 40 and ds[0][0].shape == (3, 32, 32)

    flag = tmp_path / "pwned"
    _cifar_folder(tmp_path / "evil", {"data": data, "labels": Payload(flag)})
    with pytest.raises(BadInput, match=r"data_batch_1' was refused without running it: it asks for posix.system"):
        cifar10(tmp_path / "evil")
    assert not flag.exists()


# ---------------------------------------------------------------------------- voc2coco never touches sources
def _raccoon_like(tmp_path: Path, names: list[str] | None = None) -> tuple[Path, Path]:
    """Real photos in ``images/`` and a labels CSV in the raccoon set's columns."""
    imgs = photos(tmp_path / "images", n=3)
    rows = [["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]]
    for name in names or [p.name for p in imgs]:
        rows.append([name, 451, 300, "cat", 10, 20, 200, 250])
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return tmp_path / "images", labels


def _snapshot(folder: Path) -> dict[str, tuple[bool, bytes]]:
    return {p.name: (p.is_symlink(), p.read_bytes()) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("copy_flag", [[], ["--copy"]], ids=["link", "copy"])
@pytest.mark.parametrize("where", ["same", "inside"])
def test_voc2coco_out_equal_to_or_inside_images_touches_nothing(tmp_path, capsys, copy_flag, where):
    images, labels = _raccoon_like(tmp_path)
    before = _snapshot(images)
    out = images if where == "same" else images / "coco" / "train"
    assert voc2coco.main(["csv", str(labels), "--images", str(images), "--out", str(out), *copy_flag]) == 2
    assert "is --images or a folder inside it" in one_error_line(capsys.readouterr().err)
    assert _snapshot(images) == before


@pytest.mark.parametrize("bad", ["absolute", "dotdot"])
def test_voc2coco_names_that_leave_the_image_folder_are_refused(tmp_path, capsys, bad):
    victim = tmp_path / "elsewhere" / "precious.jpg"
    photos(victim.parent, n=1)[0].rename(victim)
    content = victim.read_bytes()
    name = str(victim) if bad == "absolute" else "../elsewhere/precious.jpg"
    images, labels = _raccoon_like(tmp_path, ["photo_0.jpg", "photo_1.jpg", name])
    # the output folder already holds a file of that name, as in the report
    (tmp_path / "out").mkdir()
    for copy_flag in ([], ["--copy"]):
        assert voc2coco.main(["csv", str(labels), "--images", str(images), "--out", str(tmp_path / "out"),
                              *copy_flag]) == 2  # fmt: skip
        assert "absolute or contains '..'" in one_error_line(capsys.readouterr().err)
    assert victim.read_bytes() == content and not victim.is_symlink()
    assert list((tmp_path / "out").iterdir()) == []


def test_voc2coco_xml_filename_with_dotdot_is_refused(tmp_path, capsys):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "a.xml").write_text(
        "<annotation><filename>../../etc/hosts</filename><size><width>10</width><height>10</height></size>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
        "</object></annotation>"
    )
    photos(tmp_path / "images", n=1)
    assert voc2coco.main(["xml", str(ann), "--images", str(tmp_path / "images"), "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "a.xml" in line and "'../../etc/hosts'" in line


def test_voc2coco_replaces_only_what_it_made(tmp_path, capsys):
    images, labels = _raccoon_like(tmp_path)
    out = tmp_path / "out"
    argv = ["csv", str(labels), "--images", str(images), "--out", str(out)]
    assert voc2coco.main(argv) == 0 and voc2coco.main(argv) == 0  # its own links are replaced on a re-run
    assert (out / "photo_1.jpg").is_symlink()
    assert voc2coco.main([*argv[:-1], str(tmp_path / "out_copy"), "--copy"]) == 0
    assert voc2coco.main([*argv[:-1], str(tmp_path / "out_copy"), "--copy"]) == 0  # identical copies are kept
    # a user's own file in the output folder, and a COCO json the tool did not write, are left alone
    user = tmp_path / "user"
    user.mkdir()
    (user / "photo_1.jpg").write_bytes(b"the user's own file")
    assert voc2coco.main([*argv[:-1], str(user)]) == 2
    assert "already exists and was not made by this tool" in one_error_line(capsys.readouterr().err)
    assert (user / "photo_1.jpg").read_bytes() == b"the user's own file" and sorted(os.listdir(user)) == ["photo_1.jpg"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "_annotations.coco.json").write_text('{"images": [], "annotations": [], "categories": []}')
    assert voc2coco.main([*argv[:-1], str(theirs)]) == 2
    assert "was not written by tools/voc2coco.py" in one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir(theirs)) == ["_annotations.coco.json"]


# ---------------------------------------------------------------------------- non-finite gradients and weights
def test_inf_gradient_with_a_finite_loss_never_reaches_a_checkpoint(tmp_path, capsys):
    """The issue's case: finite loss, inf gradient on the step before a checkpoint."""
    t = Trainer(tiny_cfg(ckpt_every=4, max_steps=8), tmp_path).setup()
    weight = t.model.head.weight
    weight.register_hook(lambda g: g * float("inf") if t.step == 3 else g)
    with pytest.raises(NonFiniteLoss, match=r"gradient is (inf|nan) at step 3 .*the update was not applied"):
        t.train()
    assert [s for s, _ in t.history] == [0, 1, 2]  # the loss of step 3 was finite, its update never applied
    assert torch.isfinite(weight).all()
    assert not list((tmp_path / "checkpoints").glob("step_*.pt"))  # step 4 (the next checkpoint) never came
    assert "STOPPED: gradient is" in capsys.readouterr().out


def test_non_finite_weights_are_never_saved(tmp_path):
    t = Trainer(tiny_cfg(max_steps=2), tmp_path).setup()
    t.train()
    good = latest_checkpoint(tmp_path / "checkpoints")
    with torch.no_grad():
        t.model.blocks[0].attn.qkv.weight[0, 0] = float("nan")
    t.step = 3
    with pytest.raises(NonFiniteLoss, match=r"blocks.0.attn.qkv.weight\); not saved"):
        t.save_checkpoint()
    assert (
        latest_checkpoint(tmp_path / "checkpoints") == good
        and not (tmp_path / "checkpoints" / "step_0000003.pt").exists()
    )


def test_checkpoint_at_each_epoch_end_by_default(tmp_path):
    t = Trainer(tiny_cfg(max_steps=9, keep_ckpts=5), tmp_path).setup()
    assert t.steps_per_epoch == 7
    t.train()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")) == [
        "step_0000007.pt", "step_0000009.pt"]  # the epoch end and the end of the run  # fmt: skip
    # every shipped detection config checkpoints during the run: at epoch ends (the default) or every
    # N steps with N shorter than the run
    for cfg in (ROOT / "configs" / "detection").glob("*.py"):
        train = Config.fromfile(str(cfg)).get("train", {})
        every = train.get("ckpt_every")
        assert every is None or 1 <= every < (train.get("max_steps") or float("inf")), cfg


# ============================================================================ exit codes, one clear line
@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("syntax", "syntax error: '(' was never closed"),
        ("undefined", "NameError: name 'undefined_thing' is not defined"),
        ("regex", "strategy.no_decay: '[unclosed' is not a valid regex"),
        ("no_equals", "--cfg-options 'train.epochs': expected key=value"),
        ("brackets", "--cfg-options 'strategy.no_decay=[[unclosed]' cannot be parsed"),
        ("epochs_abc", "train.epochs must be a whole number >= 1, got 'abc'"),
        ("epochs_fraction", "train.epochs must be a whole number >= 1, got 2.5"),
        ("ckpt_negative", "train.ckpt_every must be a whole number >= 1, got -5"),
        ("work_dir_file", "is a file, not a folder"),
        ("missing_ckpt", "does not exist"),
        ("truncated_ckpt", "is truncated or not a torch file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, setup, expected):
    config, options, work_dir, resume = DEFAULT, [], tmp_path / "wd", None
    if setup in ("syntax", "undefined", "regex"):
        config = str(tmp_path / "cfg.py")
        body = {"syntax": 'model = dict(type="timm"\n', "undefined": f'_base_ = "{DEFAULT}"\nx = undefined_thing\n',
                "regex": f'_base_ = "{DEFAULT}"\nstrategy = dict(no_decay=["[unclosed"])\n'}[setup]  # fmt: skip
        Path(config).write_text(body)
    options = {"brackets": ["strategy.no_decay=[[unclosed]"], "no_equals": ["train.epochs"],
               "epochs_abc": ["train.epochs=abc"], "epochs_fraction": ["train.epochs=2.5"],
               "ckpt_negative": ["train.ckpt_every=-5", "train.max_steps=1"]}.get(setup, ["train.max_steps=1"])  # fmt: skip
    if setup == "work_dir_file":
        work_dir.write_text("a file the user keeps")
    if setup == "missing_ckpt":
        resume = str(tmp_path / "nowhere.pt")
    if setup == "truncated_ckpt":
        assert train_cli(tmp_path / "full", "train.max_steps=1") == 0
        whole = (tmp_path / "full" / "checkpoints" / "step_0000001.pt").read_bytes()
        (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
        resume = str(tmp_path / "cut.pt")
        capsys.readouterr()
    assert train_cli(work_dir, *options, resume=resume, config=config) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    if setup == "work_dir_file":
        assert work_dir.read_text() == "a file the user keeps"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when no GPU is visible")
def test_device_cuda_without_a_gpu_is_bad_input(tmp_path, capsys):
    assert train_cli(tmp_path / "wd", "train.max_steps=1", "train.device=cuda") == 2
    assert "train.device='cuda' but no CUDA GPU is visible" in one_error_line(capsys.readouterr().err)


def test_show_lr_and_voc2coco_bad_input_exit_2(tmp_path, capsys):
    assert show_lr.main([str(tmp_path / "missing.py")]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    assert (
        voc2coco.main(["csv", str(tmp_path / "none.csv"), "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    )
    one_error_line(capsys.readouterr().err)


def test_non_finite_loss_exits_1_and_a_bug_exits_4(tmp_path, capsys, monkeypatch):
    assert train_cli(tmp_path / "a", "train.max_steps=3", "strategy.lr=1e10", "schedule.type=constant") == 1
    assert "error:" in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "train", lambda self: 1 / 0)
    assert train_cli(tmp_path / "b", "train.max_steps=1") == 4
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "unexpected failure (a bug" in err


# ---------------------------------------------------------------------------- SIGTERM / Ctrl-C
def _losses(work_dir: Path) -> list[tuple[int, float]]:
    with open(work_dir / "train_log.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_at_the_step_boundary_exits_3_and_resumes_exactly(tmp_path, sig):
    """A real process gets the signal mid-epoch; --resume then gives every loss of an uninterrupted run."""
    opts = [*TINY, "train.epochs=3", "train.batch_size=8", "train.log_every=1", "train.seed=5"]
    cmd = [sys.executable, "tools/train.py", DEFAULT, "--work-dir", str(tmp_path / "cut"), "--cfg-options", *opts]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "cut" / "train_log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) > 4):
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert "Traceback" not in err and "Continue with the same command plus --resume" in err
    stopped_at = len(_losses(tmp_path / "cut"))
    ckpt = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    assert ckpt.name == f"step_{stopped_at:07d}.pt" and 0 < stopped_at < 45
    assert train_tool.main([DEFAULT, "--work-dir", str(tmp_path / "cut"), "--resume", "--cfg-options", *opts]) == 0
    assert train_tool.main([DEFAULT, "--work-dir", str(tmp_path / "full"), "--cfg-options", *opts]) == 0
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")  # exact float equality, step for step


# ============================================================================ bad data at setup
def _image_folder_cfg(root: Path, **train) -> Config:
    cfg = tiny_cfg(max_steps=2, batch_size=2, **train)
    cfg.model.update(img_size=16, in_chans=3)
    cfg.data = dict(train=dict(type="image_folder", root=str(root), split="train",
                               pipeline=[dict(type="Resize", height=16, width=16)]),
                    val=dict(type="image_folder", root=str(root), split="val",
                             pipeline=[dict(type="Resize", height=16, width=16)]))  # fmt: skip
    return cfg


def _photo_split(root: Path, split: str) -> None:
    for cls in ("cat", "cup"):
        photos(root / split / cls, n=3, size=(40, 30))


def _break(path: Path, how: str) -> str:
    if how == "corrupt":
        path.write_bytes(b"\x00garbage, not an image" * 20)
        return "not a readable image"
    if how == "empty":
        path.write_bytes(b"")
        return "empty (0 bytes)"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-200])
        return "truncated"
    if how == "dangling":
        path.unlink()
        path.symlink_to(path.parent / "gone.jpg")
        return "a link to a missing file"
    if how == "folder":
        path.unlink()
        path.mkdir()
        return "a folder, not an image file"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["corrupt", "empty", "truncated", "dangling", "folder"])
def test_bad_image_fails_at_setup_naming_it_or_is_skipped(tmp_path, how):
    _photo_split(tmp_path, "train")
    _photo_split(tmp_path, "val")
    bad = tmp_path / "train" / "cup" / "photo_1.jpg"
    why = _break(bad, how)
    with pytest.raises(BadInput, match=re.escape(f"1 of 6 train images cannot be used: {bad} ({why}")):
        Trainer(_image_folder_cfg(tmp_path), tmp_path / "wd").setup()
    assert not (tmp_path / "wd").exists()
    with pytest.warns(UserWarning, match=rf"skipping 1 unusable train images .*{bad.name}"):
        t = Trainer(_image_folder_cfg(tmp_path, bad_images="skip"), tmp_path / "wd").setup()
    assert len(t.train_set) == 5
    if how == "truncated":  # the remaining images train (once is enough: the same path for every case)
        t.train()
        assert len(t.history) == 2


@pytest.mark.parametrize("how", ["empty_split", "corrupt_split"])
def test_empty_or_corrupt_val_split_fails_at_setup_not_after_an_epoch(tmp_path, how):
    _photo_split(tmp_path, "train")
    _photo_split(tmp_path, "val")
    if how == "empty_split":
        cfg = tiny_cfg(max_steps=2)
        cfg.data.val = dict(type="digits", split="val", holdout=1.0, part="main")  # holds no sample
        match = "the val split is empty"
    else:
        for p in (tmp_path / "val").rglob("*.jpg"):
            _break(p, "corrupt")
        cfg = _image_folder_cfg(tmp_path)
        match = "6 of 6 val images cannot be used"
    with pytest.raises(BadInput, match=match):
        Trainer(cfg, tmp_path / "wd").setup()
    assert not (tmp_path / "wd" / "train_log.csv").exists()


def test_coco_image_of_the_wrong_size_is_named_at_setup(tmp_path):
    from recipes.train.data.checks import check_dataset
    from recipes.train.data.coco_detection import CocoDetection

    imgs = photos(tmp_path / "train", n=3)  # 451x300, 600x400, 512x512
    sizes = [(451, 300), (600, 400), (500, 500)]  # the last one disagrees with its file
    coco = {"images": [{"id": i, "file_name": p.name, "width": w, "height": h}
                       for i, (p, (w, h)) in enumerate(zip(imgs, sizes, strict=True))],
            "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [5, 5, 50, 50]}],
            "categories": [{"id": 1, "name": "cat"}]}  # fmt: skip
    (tmp_path / "train" / "_annotations.coco.json").write_text(json.dumps(coco))
    ds = CocoDetection(tmp_path / "train" / "_annotations.coco.json", size=64)
    with pytest.raises(BadInput, match=r"photo_2.jpg \(512x512 pixels but the annotations say 500x500\)"):
        check_dataset(ds, "train")
    with pytest.warns(UserWarning, match="skipping 1 unusable train images"):
        check_dataset(ds, "train", mode="skip")
    assert [im["file_name"] for im in ds.images] == ["photo_0.jpg", "photo_1.jpg"] and len(ds) == 2


@pytest.mark.slow
def test_detect_continues_past_a_bad_image(tmp_path, capsys):
    """A real RF-DETR Nano (random weights, ~10 s on CPU): the good photo is drawn, the bad one named."""
    from recipes.train.tasks.detection import build_rfdetr_wrapper

    wrapper = build_rfdetr_wrapper(num_classes=2, pretrained=None, size="nano")
    ckpt = tmp_path / "best.pt"
    save_atomic({"model": wrapper.model.model.state_dict(), "class_names": ["cat", "cup"]}, ckpt)
    good = photos(tmp_path / "imgs", n=1)[0]
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    cfg = str(ROOT / "configs" / "rfdetr_ft.py")
    rc = detect.main([cfg, str(ckpt), str(bad), str(good), "--out-dir", str(tmp_path / "out"), "--cfg-options",
                       "model.size=nano"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 2 and (tmp_path / "out" / "photo_0.png").is_file()
    assert f"{bad}: skipped, it cannot be read as an image" in err and "1 of 2 images could not be read" in err


# ============================================================================ resume and the work dir
def test_damaged_eval_log_is_set_aside_and_resume_goes_on(tmp_path, caplog):
    Trainer(tiny_cfg(epochs=2, ckpt_every=7), tmp_path).setup().train()
    log = tmp_path / "eval_log.jsonl"
    log.write_text(log.read_text()[:-20])  # a kill in the middle of a write
    (tmp_path / "checkpoints" / "last").write_text("step_0000007.pt")
    with caplog.at_level(logging.WARNING, logger="recipes"):
        t = Trainer(tiny_cfg(epochs=2, ckpt_every=7), tmp_path, resume=True).setup()
    assert "eval_log.jsonl cannot be read" in caplog.text
    t.train()
    assert len(list(tmp_path.glob("eval_log.jsonl.damaged-*"))) == 1
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [14]


@pytest.mark.parametrize("pointer", ["empty", "truncated_target"])
def test_bad_last_pointer_falls_back_to_the_newest_good_checkpoint(tmp_path, caplog, pointer):
    Trainer(tiny_cfg(max_steps=6, ckpt_every=2), tmp_path).setup().train()
    ckpts = tmp_path / "checkpoints"
    if pointer == "empty":
        (ckpts / "last").write_text("")
        expected = "step_0000006.pt"
    else:
        whole = (ckpts / "step_0000006.pt").read_bytes()
        (ckpts / "step_0000006.pt").write_bytes(whole[:1000])
        expected = "step_0000004.pt"
    with caplog.at_level(logging.WARNING, logger="recipes"):
        t = Trainer(tiny_cfg(max_steps=8, ckpt_every=2), tmp_path, resume=True).setup()
    assert f"falling back to the newest complete checkpoint {expected}" in caplog.text
    assert t.step == int(expected[5:12])


def test_stale_tmp_files_are_removed_and_user_files_kept(tmp_path, capsys):
    Trainer(tiny_cfg(max_steps=2), tmp_path).setup().train()
    stale = tmp_path / "checkpoints" / "step_0000004.pt.tmp"
    stale.write_bytes(b"\0" * 4096)  # a full disk left half a checkpoint
    mine = tmp_path / "notes.txt.tmp"
    mine.write_text("the user's")
    Trainer(tiny_cfg(max_steps=4), tmp_path, resume=True).setup().train()
    assert not stale.exists() and mine.read_text() == "the user's"
    assert "removed" in capsys.readouterr().out


def test_atomic_writes_fsync_the_file_and_the_folder(tmp_path, monkeypatch):
    import stat

    kinds = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (kinds.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd))[1])
    save_atomic({"w": torch.ones(1)}, tmp_path / "c.pt")
    assert kinds == [False, True]  # the file's data, then the folder's entry after the rename


def _hold_lock(work_dir: Path, held, done) -> None:
    from recipes.train.workdir import WorkDirLock

    WorkDirLock(work_dir).acquire()
    held.set()
    done.wait(60)


def test_second_run_into_a_busy_work_dir_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # another process holding the lock, as a first run would
    held, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path / "wd", held, done))
    holder.start()
    try:
        assert held.wait(30)
        (tmp_path / "wd" / "train_log.csv").write_text("the first run's log\n")
        (tmp_path / "wd" / RUN_MARKER).write_text("")  # the first run's folder, as it marks it
        assert train_cli(tmp_path / "wd", "train.max_steps=1") == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"pid {holder.pid}" in line and "in use by a running training" in line
        assert (tmp_path / "wd" / "train_log.csv").read_text() == "the first run's log\n"  # nothing moved
        assert holder.is_alive()  # and the first run is still running
    finally:
        holder.kill()  # dies holding the lock: its pid stays in the file
        holder.join()
    assert train_cli(tmp_path / "wd", "train.max_steps=1") == 0  # the dead holder's lock is taken over
    assert f"took over the lock left by a run that is no longer running (pid {holder.pid}" in capsys.readouterr().out


def test_resume_of_a_finished_run_leaves_summary_alone(tmp_path, capsys):
    Trainer(tiny_cfg(max_steps=3), tmp_path).setup().train()
    before = (tmp_path / "summary.json").read_bytes()
    assert json.loads(before)["final_loss"] is not None
    summary = Trainer(tiny_cfg(max_steps=3), tmp_path, resume=True).setup().train()
    assert (tmp_path / "summary.json").read_bytes() == before and summary["steps"] == 3
    assert "already finished" in capsys.readouterr().out


def test_best_json_is_rederived_from_best_pt_after_a_kill_between_the_writes(tmp_path):
    Trainer(tiny_cfg(max_steps=8), tmp_path).setup().train()
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    (tmp_path / "best.json").write_text(json.dumps({"metric": "top1", "value": 0.0, "epoch": 0, "step": 0}))
    Trainer(tiny_cfg(max_steps=8), tmp_path, resume=True).setup()
    info = json.loads((tmp_path / "best.json").read_text())
    assert (info["value"], info["step"], info["weights"]) == (best["value"], best["step"], best["weights"])


# ============================================================================ settings that must not pass silently
@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(min_lr=2e-3), "min_lr=0.002 is above the peak lr=0.001"),
        (dict(min_lr_ratio=1.5), "min_lr_ratio=1.5 is above 1"),
        (dict(warmup_steps=5, warmup_start_lr=1.0), "warmup_start_lr=1 is above the peak lr=0.001"),
    ],
)
def test_schedule_settings_that_would_climb_are_errors(options, match):
    from recipes.schedules import build_schedule

    with pytest.raises(ValueError, match=match):
        build_schedule(dict(type="cosine", lr=1e-3, **options), total_steps=100)


def test_schedule_negative_step_is_an_error_and_lr_zero_warns():
    from recipes.schedules import build_schedule

    s = build_schedule(dict(type="cosine", lr=1e-3), total_steps=10)
    with pytest.raises(ValueError, match="step must be >= 0"):
        s.value(-1)
    with pytest.warns(UserWarning, match="lr=0: no parameter will change"):
        build_schedule(dict(type="cosine", lr=0.0), total_steps=10)


def test_registry_option_lists_hold_no_args_or_kwargs():
    from recipes.param_groups import build_param_groups
    from recipes.registry import ADAPTERS, SCHEDULES, STRATEGIES
    from recipes.train.registry import DATASETS, MODELS, TASKS

    for reg in (ADAPTERS, STRATEGIES, SCHEDULES, MODELS, DATASETS, TASKS):
        for name, _ in reg.entries():
            assert not {"args", "kwargs", "kw", "common"} & set(reg.options(name)), (reg.name, name)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(KeyError, match=r"`strategy.kwargs` is not read by anything") as e:
        build_param_groups(model, dict(type="flat", lr=1.0, kwargs=1), adapter="timm_vit")
    assert "'args'" not in str(e.value)


def test_first_signal_is_deferred_to_the_step_boundary_a_second_ctrl_c_stops_at_once():
    from recipes.train.workdir import StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == "SIGTERM"  # the code after the signal still ran: the step can finish
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back


# ============================================================================ nothing of the user's is touched
@pytest.mark.parametrize("what", ["documents", "symlink"])
def test_work_dir_holding_the_users_files_is_refused_and_nothing_moves(tmp_path, capsys, what):
    """Only a folder a run marked is set aside; a user's folder (or a link to it, or the data) is refused."""
    docs = tmp_path / "docs"
    photos(docs, n=2)
    (docs / "thesis.txt").write_text("the user's own")
    before = sorted(p.name for p in docs.iterdir())
    work_dir = {"documents": docs, "symlink": tmp_path / "link"}[what]
    if what == "symlink":
        work_dir.symlink_to(docs, target_is_directory=True)
    assert train_cli(work_dir, "train.max_steps=1") == 2
    line = one_error_line(capsys.readouterr().err)
    assert (
        "holds files no training run wrote (photo_0.jpg, photo_1.jpg, thesis.txt)" in line
        and "nothing was moved" in line
    )
    assert sorted(p.name for p in docs.iterdir()) == before and (docs / "thesis.txt").read_text() == "the user's own"


@pytest.mark.slow  # two tiny runs and show_lr: about 15 s
def test_a_marked_run_is_set_aside_and_show_lr_plots_stay(tmp_path, capsys):
    """show_lr then train on the same work dir: the plots stay; a second run moves only the first run's files."""
    work_dir = tmp_path / "wd"
    assert show_lr.main([DEFAULT, "--out-dir", str(work_dir / "show_lr"), "--cfg-options", *TINY]) == 0
    plots = sorted(p.name for p in (work_dir / "show_lr").iterdir())
    assert "lr_schedule.png" in plots
    assert train_cli(work_dir, "train.max_steps=1") == 0
    assert sorted(p.name for p in (work_dir / "show_lr").iterdir()) == plots and not (work_dir / "previous").exists()
    assert (work_dir / RUN_MARKER).is_file()
    assert train_cli(work_dir, "train.max_steps=1") == 0
    (earlier,) = (work_dir / "previous").iterdir()
    assert (earlier / "summary.json").is_file() and not (earlier / "show_lr").exists()
    assert sorted(p.name for p in (work_dir / "show_lr").iterdir()) == plots


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_lora_safetensors_follow_the_umask(tmp_path, fmt):
    """safetensors writes 0600; a saved LoRA gets the mode of any new file (readable by the team at umask 022)."""
    pytest.importorskip("peft")
    import diffusers
    from peft import LoraConfig

    from recipes.train.diffusion.lora_io import save_lora
    from recipes.train.diffusion.testing import _unet

    unet = _unet(cross=16)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"]))
    old = os.umask(0o022)
    try:
        path = save_lora(
            diffusers.StableDiffusionPipeline, unet, tmp_path / "lora", "unet_lora_layers", fmt, family="sd15"
        )
    finally:
        os.umask(old)
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o644


def test_predict_never_overwrites_an_input_or_an_existing_file(tmp_path, capsys):
    """--out-dir the inputs' own folder, a user's file of the same name, two inputs of one name: all kept."""
    from PIL import Image

    out = tmp_path / "photos"
    (a,) = photos(out, n=1, ext=".png")  # an input inside --out-dir, named as its drawing would be
    (b,) = photos(tmp_path / "other", n=1, ext=".png")  # same file name, another folder
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    drawing = Image.new("RGB", (8, 8), "red")
    first = detect.save_new(drawing, out, a.stem)
    second = detect.save_new(drawing, out, b.stem)
    assert (first.name, second.name) == ("photo_0-1.png", "photo_0-2.png")
    assert a.read_bytes() == a_bytes and b.read_bytes() == b_bytes
    (out / "photo_0-3.png").symlink_to(tmp_path / "nowhere.png")  # a dangling link is a name in use too
    assert detect.save_new(drawing, out, a.stem).name == "photo_0-4.png" and not (tmp_path / "nowhere.png").exists()


def test_predict_out_dir_that_is_a_file_is_one_error_line(tmp_path, capsys):
    (img,) = photos(tmp_path, n=1)
    (tmp_path / "out").write_text("the user's")
    argv = [
        str(ROOT / "configs" / "rfdetr_ft.py"),
        str(tmp_path / "none.pt"),
        str(img),
        "--out-dir",
        str(tmp_path / "out"),
    ]
    assert detect.main(argv) == 2
    assert "--out-dir" in one_error_line(capsys.readouterr().err) and (tmp_path / "out").read_text() == "the user's"


@pytest.mark.slow
def test_predict_real_run_keeps_every_input_and_names_outputs_apart(tmp_path, capsys):
    """A real RF-DETR Nano: inputs in --out-dir and two inputs of one name each get a new drawing."""
    from recipes.train.tasks.detection import build_rfdetr_wrapper

    wrapper = build_rfdetr_wrapper(num_classes=2, pretrained=None, size="nano")
    ckpt = tmp_path / "best.pt"
    save_atomic({"model": wrapper.model.model.state_dict(), "class_names": ["cat", "cup"]}, ckpt)
    (a,) = photos(tmp_path / "out", n=1, ext=".png")
    (b,) = photos(tmp_path / "other", n=1, ext=".png")
    before = {p: p.read_bytes() for p in (a, b)}
    cfg = str(ROOT / "configs" / "rfdetr_ft.py")
    rc = detect.main(
        [cfg, str(ckpt), str(a), str(b), "--out-dir", str(tmp_path / "out"), "--cfg-options", "model.size=nano"]
    )
    assert rc == 0 and all(p.read_bytes() == data for p, data in before.items())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo_0-1.png", "photo_0-2.png", "photo_0.png"]


def test_show_lr_never_replaces_a_png(tmp_path, capsys):
    """A second run into the same folder writes lr_schedule-1.png etc.; the first run's files and a user's stay."""
    out = tmp_path / "plots"
    out.mkdir()
    (out / "lr_heatmap.png").write_bytes(b"the user's own picture")
    argv = [DEFAULT, "--out-dir", str(out), "--csv", "--cfg-options", *TINY]
    assert show_lr.main(argv) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == ["lr_heatmap-1.png", "lr_heatmap.png", "lr_schedule-1.csv", "lr_schedule-1.png"]
    assert show_lr.main(argv) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in first} == first
    assert {"lr_schedule-2.png", "lr_heatmap-2.png", "lr_schedule-2.csv"} < {p.name for p in out.iterdir()}


def test_custom_imports_beside_the_config_and_errors_naming_the_config(
    tmp_path, capsys, monkeypatch, registries, request
):
    """A user's module beside the config is imported without PYTHONPATH; a missing one names the config."""
    monkeypatch.chdir(tmp_path)
    request.addfinalizer(lambda: [sys.modules.pop(m) for m in list(sys.modules) if m.startswith("zr_user_models")])
    pkg = tmp_path / "proj" / "zr_user_models"
    pkg.mkdir(parents=True)
    (pkg / "fixed_head.py").write_text(
        "from torch import nn\nfrom recipes.train.registry import MODELS\n\n\n"
        "@MODELS.register_module('zr_fixed_head_net')\ndef build(width: int = 8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Linear(width, 10))\n"
    )
    cfg = tmp_path / "proj" / "cfg.py"
    cfg.write_text(f'_base_ = "{DEFAULT}"\ncustom_imports = dict(imports=["zr_user_models.fixed_head"])\n'
                   'model = dict(_delete_=True, type="zr_fixed_head_net")\n'
                   'strategy = dict(_delete_=True, type="flat", lr=1e-3)\n')  # fmt: skip
    not_model = [o for o in TINY if not o.startswith("model.")]  # the user's builder takes width only
    argv = [str(cfg), "--work-dir", str(tmp_path / "wd"), "--cfg-options", *not_model, "train.max_steps=1"]
    assert train_tool.main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "model.type='zr_fixed_head_net': its builder takes no `num_classes`" in line  # imported: it got this far
    cfg.write_text(f'_base_ = "{DEFAULT}"\ncustom_imports = dict(imports=["zr_user_models.missing"])\n')
    assert train_cli(tmp_path / "wd", "train.max_steps=1", config=str(cfg)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"config {str(cfg)!r}: custom_imports: ModuleNotFoundError" in line and "recipes/train" not in line


# ============================================================================ issue 23: exit 4 and vague messages
def test_cfg_options_dict_is_one_error_line(tmp_path, capsys):
    assert train_cli(tmp_path / "wd", 'model={"type": "timm"}') == 2
    assert "a dict cannot be given whole; set its keys one by one, e.g. model.type=" in one_error_line(
        capsys.readouterr().err
    )


def test_disk_full_during_a_save_says_so_and_keeps_the_earlier_checkpoint(tmp_path):
    """A real ENOSPC: the temporary file is a link to /dev/full."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    earlier = tmp_path / "step_0000001.pt"
    save_atomic({"w": torch.ones(3)}, earlier)
    path = tmp_path / "step_0000002.pt"
    path.with_name(path.name + ".tmp").symlink_to("/dev/full")
    with pytest.raises(BadInput, match=r"the disk is full .*the earlier checkpoints are intact"):
        save_atomic({"w": torch.randn(256, 256)}, path)
    assert not path.exists() and not path.with_name(path.name + ".tmp").is_symlink()
    assert torch.equal(safe_load(earlier)["w"], torch.ones(3))


@pytest.mark.parametrize("case", ["negative_init", "dangling_out"])
def test_track_arguments_are_one_error_line(tmp_path, capsys, case):
    from tools import track

    argv = [str(ROOT / "configs" / "tracking" / "videomae_dinov2_cpu.py"), "--tracker", "opencv_mil"]
    if case == "negative_init":  # a box starting left of the frame: argparse took -10 for an option
        argv += ["--video", str(tmp_path / "none.mp4"), "--init", "-10,20,30,40"]
        expected = "none.mp4"
    else:
        (tmp_path / "out").symlink_to(tmp_path / "gone")
        argv += ["--video", str(tmp_path / "none.mp4"), "--init", "10,20,30,40", "--out", str(tmp_path / "out")]
        expected = "which does not exist; give a new folder"
    assert track.main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert expected in line and "expected one argument" not in line


def test_reproduce_on_a_damaged_results_json_names_the_cell(tmp_path, capsys, monkeypatch):
    from tools import reproduce
    from tools.baselines import experiments as baselines

    monkeypatch.setattr(baselines, "results_path", lambda name: tmp_path / name / "results.json")
    (tmp_path / "dinov2_cifar10").mkdir()
    cell = {"method": "linear_probe", "seed": 0, "commit": "abc"}  # config_hash lost in a hand edit
    data = {"baseline": "dinov2_cifar10", "schema": baselines.SCHEMA, "cells": {"linear_probe/cpu/0": cell}}
    (tmp_path / "dinov2_cifar10" / "results.json").write_text(json.dumps(data))
    with pytest.raises(BadInput, match=r"cell 'linear_probe/cpu/0' has no config_hash; the file is damaged"):
        baselines.read_results("dinov2_cifar10")
    assert reproduce.main(["dinov2_cifar10", "--dry-run"]) == 2
    assert "has no config_hash" in one_error_line(capsys.readouterr().err)


@pytest.mark.slow  # the full Flux.1 tree on meta: 20-50 s
def test_show_lr_draws_flux_lora_as_typed_on_the_meta_device(capsys):
    """configs/diffusion/flux_lora.py with no option: the 12B denoiser on meta (it was built in real memory)."""
    from recipes.train.config import load_config

    cfg = load_config(ROOT / "configs" / "diffusion" / "flux_lora.py")
    show_lr.on_meta_without_weights(cfg)
    plan = show_lr.plan_for(cfg, None)
    assert {p.device.type for p in plan.model.parameters()} == {"meta"}
    assert sum(p.numel() for p in plan.model.parameters()) > 11e9
    assert "model.device='meta'" in capsys.readouterr().out


@pytest.mark.slow  # builds a ViT-S/14: about 15 s
def test_show_lr_needs_no_data_nor_weights(tmp_path, capsys):
    """A config whose data_root and weight file are not on this machine still draws, each left-out said."""
    cfg = ROOT / "configs" / "classification" / "dinov2_s14_cifar10_linear_probe.py"  # only the head trains
    argv = [str(cfg), "--out-dir", str(tmp_path), "--cfg-options", "model.pretrained=/nowhere/dinov2_small"]
    assert show_lr.main(argv) == 0
    out = capsys.readouterr().out
    assert "model.pretrained='/nowhere/dinov2_small' is not on this machine" in out
    assert "assuming 100 steps per epoch" in out and (tmp_path / "lr_schedule.png").is_file()
    assert "10 classes assumed" in out and "model.device='meta'" in out


def test_lr_plot_labels_stay_inside_the_figure_and_none_is_pale_yellow(tmp_path, monkeypatch):
    """Long merged-group labels (a real timm ViT-B on meta, component LRs) end inside the saved figure."""
    import matplotlib
    import matplotlib.pyplot as plt
    import timm

    from recipes import build_param_groups, build_schedule
    from recipes.report import lr_table, plot_lr

    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_224")
    strategy = dict(type="layer_decay", lr=1e-3, decay=0.75, component_scale={"norm": 0.5, "self_attn": 0.8})
    groups = build_param_groups(vit, strategy)
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    plot_lr(lr_table(groups, build_schedule(dict(type="cosine"), 100, lr=1e-3)), str(tmp_path / "lr.png"))
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    texts = fig.axes[0].texts
    assert len(texts) >= 14
    for t in texts:
        box = t.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1, t.get_text()
        r, g, b, _ = matplotlib.colors.to_rgba(t.get_color())
        assert not (r > 0.8 and g > 0.8 and b < 0.4), (t.get_text(), t.get_color())  # viridis' pale yellow end


def test_merged_group_names_cannot_be_read_as_ranges():
    from recipes.param_groups import _runs

    label = lambda k: f"{k:02d}"  # noqa: E731
    assert _runs([0, 4], label) == "00+04"  # was "00-04": blocks 0 and 4 read as 0 to 4
    assert _runs([0, 1, 2, 3, 4], label) == "00-04"
    assert _runs([0, 1, 2, 5, 7, 8], label) == "00-02+05+07-08"


def test_rates_keep_decimals_below_one_and_evaluation_shows_a_bar(capsys):
    from recipes.train.run_log import WithProgress, per_second

    assert [per_second(r) for r in (0.4321, 3.14159, 123.4)] == ["0.43", "3.1", "123"]
    data = torch.utils.data.TensorDataset(torch.randn(12, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    shown = WithProgress(loader, "eval", enabled=True)
    assert shown.dataset is data and len(shown) == 3  # a task may read loader.dataset
    assert sum(len(b[0]) for b in shown) == 12
    assert "eval" in capsys.readouterr().err
    assert sum(len(b[0]) for b in WithProgress(loader, "eval", enabled=False)) == 12
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("resolution", [0, -64, (0, 64), True, 2.5])
def test_data_resolution_zero_or_negative_is_a_clear_error(resolution):
    from recipes.train.data.captioned import _size

    with pytest.raises(ValueError, match=r"data.resolution must be a whole number > 0"):
        _size(resolution)
    assert _size(64) == (64, 64) and _size((32, 48)) == (32, 48)


def test_tracking_exclude_none_names_the_key(tmp_path):
    from recipes.train.data.tracking import load_sequences

    with pytest.raises(ValueError, match=r"data.exclude: expected a list of sequence names \(or \[\]\), got None"):
        load_sequences(tmp_path, exclude=None)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((200, 20, 10, 250), "inverted box"),
        (("nan", 20, 200, 250), "must be finite"),
        ((10, 20, 500, 250), "leaves the 451x300 image"),
    ],
)
def test_voc2coco_refuses_inverted_nan_and_outside_boxes(tmp_path, capsys, box, expected):
    images, labels = _raccoon_like(tmp_path)
    rows = labels.read_text().splitlines()
    name = rows[1].split(",")[0]
    rows[1] = ",".join([name, "451", "300", "cat", *map(str, box)])
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "coco"
    assert voc2coco.main(["csv", str(labels), "--images", str(images), "--out", str(out)]) == 2
    assert expected in one_error_line(capsys.readouterr().err) and not out.exists()


# ---------------------------------------------------------------------------- issue 23, the rest: crafted checkpoints
@pytest.fixture(scope="module")
def one_step_checkpoint(tmp_path_factory) -> dict:
    """The entries of a real checkpoint tools/train.py wrote after one step."""
    work_dir = tmp_path_factory.mktemp("one_step") / "wd"
    assert train_cli(work_dir, "train.max_steps=1") == 0
    return torch.load(work_dir / "checkpoints" / "step_0000001.pt", weights_only=True)


def _crafted(good: dict, case: str):
    ckpt = copy.deepcopy(good)
    first = next(iter(ckpt["optimizer"]["state"]))
    if case == "not_a_dict":
        return [ckpt["model"]]
    if case == "step_text":
        ckpt["step"] = "abc"
    elif case == "optimizer_number":
        ckpt["optimizer"] = 5
    elif case == "optimizer_state_list":
        ckpt["optimizer"]["state"] = []
    elif case == "moment_of_another_shape":
        ckpt["optimizer"]["state"][first]["exp_avg"] = torch.zeros(7)
    elif case == "fewer_groups":
        ckpt["optimizer"]["param_groups"] = ckpt["optimizer"]["param_groups"][:1]
    elif case == "rng_empty":
        ckpt["rng"] = []
    elif case == "rng_damaged":
        ckpt["rng"] = [{"python": 1}]
    elif case == "best_short":
        ckpt["best"] = [1.0]
    elif case == "weight_text":
        ckpt["model"]["cls_token"] = "x"
    elif case == "weight_integer":
        ckpt["model"]["cls_token"] = ckpt["model"]["cls_token"].long()
    elif case == "class_names_number":
        ckpt["class_names"] = 5
    elif case == "task_number":
        ckpt["task"] = 5
    return ckpt


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not_a_dict", "expected a dict of tensors, got list"),
        ("step_text", "entry 'step' must be a whole number >= 0, found str 'abc'"),
        ("optimizer_number", "entry 'optimizer' must be a dict with 'state'"),
        ("optimizer_state_list", "entry 'optimizer' must be a dict with 'state'"),  # was exit 4
        ("moment_of_another_shape", "optimizer.state[0]['exp_avg']\" must be of the parameter's shape (1, 1, 32)"),
        ("fewer_groups", "its optimizer holds 1 groups of [3] parameters, this config builds 8"),
        ("rng_empty", "entry 'rng' must be a non-empty list"),  # was exit 4
        ("rng_damaged", "entry 'rng' (the generator states) is damaged"),
        ("best_short", "entry 'best' must be None or [score, epoch, 'model' or 'ema']"),  # was exit 4
        ("weight_text", "entry \"model['cls_token']\" must be a tensor, found str 'x'"),
        ("weight_integer", "'cls_token' is a torch.int64 tensor where the model holds torch.float32"),  # was cast
        ("class_names_number", "entry 'class_names' must be a list of strings, found int 5"),  # was accepted
        ("task_number", "entry 'task' must be a dict (or None), found int 5"),
    ],
)
def test_crafted_checkpoint_entries_are_one_error_line_naming_the_entry(
    tmp_path, capsys, one_step_checkpoint, case, expected
):
    """Entries of the wrong type or shape (t06, t08): exit 2 naming the file and the entry; nothing written."""
    path = tmp_path / f"{case}.pt"
    torch.save(_crafted(one_step_checkpoint, case), path)
    capsys.readouterr()
    assert train_cli(tmp_path / "wd", "train.max_steps=2", resume=str(path)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert expected in line and str(path) in line, line
    assert not (tmp_path / "wd" / "checkpoints").exists()


def test_crafted_class_names_are_refused_by_every_reader(tmp_path, one_step_checkpoint):
    """detect / track / export_diffusion read weights through read_checkpoint: the same checks."""
    from recipes.train.checkpoint import read_checkpoint

    path = tmp_path / "names.pt"
    torch.save(_crafted(one_step_checkpoint, "class_names_number"), path)
    with pytest.raises(BadInput, match=r"entry 'class_names' must be a list of strings"):
        read_checkpoint(path)
    torch.save({**one_step_checkpoint, "rng": "x"}, path)  # a training entry: only resume reads it
    assert read_checkpoint(path)["class_names"] == one_step_checkpoint["class_names"]


# ---------------------------------------------------------------------------- issue 23, the rest: disk, folders, sizes
@pytest.mark.parametrize("which", ["step_0000002.pt", "last"])
def test_disk_full_mid_run_is_one_line_and_the_resume_point_is_intact(tmp_path, capsys, which):
    """A real ENOSPC through tools/train.py: the checkpoint (or the `last` pointer, exit 4 before) lands on /dev/full."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    work_dir = tmp_path / "wd"
    assert train_cli(work_dir, "train.max_steps=1") == 0
    before = (work_dir / "checkpoints" / "step_0000001.pt").read_bytes()
    (work_dir / "checkpoints" / f"{which}.tmp").symlink_to("/dev/full")  # kept at start: a link is not ours
    capsys.readouterr()
    assert train_cli(work_dir, "train.max_steps=3", "train.ckpt_every=1", resume=str(work_dir)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot write {work_dir / 'checkpoints' / which}: the disk is full" in line
    assert (work_dir / "checkpoints" / "step_0000001.pt").read_bytes() == before
    assert (work_dir / "checkpoints" / "last").read_text() == "step_0000001.pt"


def test_disk_full_anywhere_else_is_bad_input_not_a_bug(capsys):
    import errno

    from recipes.train.errors import cli

    def log_write() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/a/train_log.csv")

    assert cli(log_write)() == 2
    assert "cannot write /runs/a/train_log.csv: the disk is full" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("tool", ["train", "voc2coco", "show_lr", "detect"])
def test_dangling_link_as_the_output_folder_is_one_error_line(tmp_path, capsys, tool):
    """Each tool's output folder given as a link to nowhere (it was exit 4, FileExistsError, in three of them)."""
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone")
    if tool == "train":
        code, option = train_cli(out, "train.max_steps=1"), "--work-dir"
    elif tool == "voc2coco":
        images, labels = _raccoon_like(tmp_path)
        code, option = voc2coco.main(["csv", str(labels), "--images", str(images), "--out", str(out)]), "--out"
    elif tool == "show_lr":
        code, option = show_lr.main([DEFAULT, "--out-dir", str(out), "--cfg-options", *TINY]), "--out-dir"
    else:
        (img,) = photos(tmp_path, n=1)
        argv = [str(ROOT / "configs" / "rfdetr_ft.py"), str(tmp_path / "none.pt"), str(img), "--out-dir", str(out)]
        code, option = detect.main(argv), "--out-dir"
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{option} {str(out)!r} is a link to {str(tmp_path / 'gone')!r}, which does not exist" in line
    assert out.is_symlink() and not (tmp_path / "gone").exists()


def test_syntax_error_in_a_base_config_names_that_file(tmp_path, capsys):
    base, top = tmp_path / "base.py", tmp_path / "top.py"
    base.write_text('model = dict(type="timm"\n')
    top.write_text('_base_ = "./base.py"\n')
    assert train_cli(tmp_path / "wd", config=str(top)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"config {base}:1: syntax error: '(' was never closed" in line and "<unknown>" not in line


@pytest.mark.parametrize("value", [0, -64, 2.5, True])
def test_image_sizes_zero_or_negative_name_the_key(tmp_path, value):
    """Classification (timm's img_size), detection (RF-DETR's resolution, the COCO split's size), tracking."""
    from transformers import VideoMAEConfig

    from recipes.train.data.coco_detection import CocoDetection
    from recipes.train.models.rfdetr import build_rfdetr_wrapper
    from recipes.train.models.timm import build_timm_model
    from recipes.train.models.tracker import VideoMAETracker

    with pytest.raises(ValueError, match=r"model.img_size must be a whole number > 0"):
        build_timm_model("vit_tiny_patch16_224", img_size=value, depth=1)
    with pytest.raises(ValueError, match=r"model.resolution must be a whole number > 0"):
        build_rfdetr_wrapper("nano", resolution=value)
    ann = tmp_path / "_annotations.coco.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 0, "name": "cat"}]}))
    with pytest.raises(ValueError, match=r"data.size must be a whole number > 0 .* by default model.resolution"):
        CocoDetection(ann, size=value)
    config = VideoMAEConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=1,
                            patch_size=14, num_frames=2, tubelet_size=2)  # fmt: skip
    with pytest.raises(ValueError, match=r"task.template_size must be a whole number > 0"):
        VideoMAETracker(config, value, 28)


def test_detection_resolution_zero_is_named_before_the_model_is_built(tmp_path, capsys):
    images, labels = _raccoon_like(tmp_path)
    assert voc2coco.main(["csv", str(labels), "--images", str(images), "--out", str(tmp_path / "coco" / "train")]) == 0
    config = str(ROOT / "configs" / "rfdetr_ft.py")
    root = f"data_root={tmp_path / 'coco'}"
    argv = [config, "--work-dir", str(tmp_path / "wd"), "--cfg-options", root, "model.resolution=0"]
    assert train_tool.main(argv) == 2  # was a two-error pydantic dump that named no key
    assert "model.resolution must be a whole number > 0 (the square input side in pixels), got 0" in one_error_line(
        capsys.readouterr().err
    )


@pytest.mark.parametrize("size", [("0", "300"), ("451", "nan"), ("-451", "300"), ("451.5", "300")])
@pytest.mark.parametrize("source", ["csv", "xml"])
def test_voc2coco_image_size_zero_negative_or_nan_is_named(tmp_path, capsys, size, source):
    """A width of 0 skipped the outside-the-image check and wrote the box; NaN in xml was a bare float error."""
    images, labels = _raccoon_like(tmp_path)
    name = labels.read_text().splitlines()[1].split(",")[0]
    if source == "csv":
        rows = labels.read_text().splitlines()
        rows[1] = ",".join([name, *size, "cat", "10", "20", "200", "250"])
        labels.write_text("\n".join(rows) + "\n")
        argv = ["csv", str(labels)]
    else:
        (tmp_path / "xml").mkdir()
        (tmp_path / "xml" / "a.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            "</size><object><name>cat</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>200</xmax><ymax>250</ymax>"
            "</bndbox></object></annotation>"
        )
        argv = ["xml", str(tmp_path / "xml")]
    out = tmp_path / "coco"
    assert voc2coco.main([*argv, "--images", str(images), "--out", str(out)]) == 2
    assert f"width/height must be whole numbers > 0, got {size[0]!r}, {size[1]!r}" in one_error_line(
        capsys.readouterr().err
    )
    assert not out.exists()
