"""One way to rebuild a trained model: ``read_checkpoint`` + ``rebuild_model``, shared by every tool."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipes.train.build import prepare_run, rebuild_model
from recipes.train.checkpoint import read_checkpoint, save_atomic
from recipes.train.config import load_config
from recipes.train.errors import BadInput
from recipes.train.trainable_state import frozen_fingerprint, model_state

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.depth=1", "model.embed_dim=12", "model.num_heads=1", "data.train.holdout=0.9", "data.train.part=main"]
TOOLS = ("detect.py", "track.py", "export_diffusion.py")


def tiny_cfg(*options: str):
    return load_config(ROOT / "configs" / "default.py", [*TINY, *options])


def test_every_tool_rebuilds_through_the_one_function_and_reader():
    for name in TOOLS:
        text = (ROOT / "tools" / name).read_text()
        assert "rebuild_model(" in text and "read_checkpoint(" in text, name
        assert "safe_load" not in text and "load_model(" not in text and "build_task(" not in text, name


def test_read_checkpoint_layouts(tmp_path):
    w = {"weight": torch.ones(2)}
    cases = {
        "run": {"model": w, "step": 3, "class_names": ["a"]},
        "bare": w,
        "wrapped": {"state_dict": {"module.weight": torch.ones(2)}},
        "compiled": {"model": {"_orig_mod.weight": torch.ones(2)}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        ckpt = read_checkpoint(tmp_path / name)
        assert list(ckpt["model"]) == ["weight"] and ckpt["path"] == str(tmp_path / name), name
    assert read_checkpoint(tmp_path / "run")["class_names"] == ["a"]
    torch.save({"model": w, "ema": {"weight": torch.zeros(2)}}, tmp_path / "ema")
    assert read_checkpoint(tmp_path / "ema", ema=True)["model"]["weight"].sum() == 0
    with pytest.raises(BadInput, match="--ema given but it holds no EMA weights"):
        read_checkpoint(tmp_path / "run", ema=True)
    torch.save({"step": 3, "note": "no weights"}, tmp_path / "empty")
    with pytest.raises(BadInput, match="holds no weights"):
        read_checkpoint(tmp_path / "empty")


def test_rebuild_model_restores_a_run_without_its_data(tmp_path, monkeypatch):
    """The class count comes from the checkpoint; no dataset is read; the weights are the checkpoint's."""
    plan = prepare_run(tiny_cfg())
    with torch.no_grad():
        for p in plan.model.parameters():
            p.add_(1.0)  # not what a fresh build gives
    path = tmp_path / "best.pt"
    save_atomic({"model": plan.model.state_dict(), "class_names": [str(k) for k in range(10)]}, path)
    from recipes.train.tasks.classification import ClassificationTask

    def no_data(*args, **kwargs):
        raise AssertionError("rebuild_model read the data")

    monkeypatch.setattr(ClassificationTask, "build_datasets", no_data)
    task, model = rebuild_model(tiny_cfg("data_root=/no/such/folder"), read_checkpoint(path), ClassificationTask)
    assert not model.training and task.class_names == [str(k) for k in range(10)]
    for k, v in plan.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(BadInput, match="this tool runs a DetectionTask config"):
        from recipes.train.tasks.detection import DetectionTask

        rebuild_model(tiny_cfg(), read_checkpoint(path), DetectionTask)
    with pytest.raises(KeyError, match=r"`model.dept` is not read by anything"):
        rebuild_model(tiny_cfg("model.dept=2"), read_checkpoint(path))  # the whole config is checked first


def test_trainable_only_checkpoint_needs_model_pretrained_and_matches_it(tmp_path):
    """A linear probe saves the head only; the frozen rest comes from ``model.pretrained`` and must match."""
    import timm

    start, other = tmp_path / "start.pth", tmp_path / "other.pth"
    for path, seed in ((start, 0), (other, 1)):
        torch.manual_seed(seed)
        vit = timm.create_model("vit_tiny_patch16_224", img_size=8, patch_size=2, in_chans=1, depth=1, embed_dim=12,
                                num_heads=1, num_classes=10)  # fmt: skip
        torch.save(vit.state_dict(), path)
    probe = ["policy.type=linear_probe", f"model.pretrained={start}"]
    plan = prepare_run(tiny_cfg(*probe))
    path = tmp_path / "probe.pt"
    save_atomic({"model": model_state(plan.model, full=False), "frozen_omitted": True,
                 "frozen_fingerprint": frozen_fingerprint(plan.model), "class_names": list("0123456789")}, path)  # fmt: skip
    _, model = rebuild_model(tiny_cfg(*probe), read_checkpoint(path))
    assert torch.equal(model.state_dict()["head.weight"], plan.model.state_dict()["head.weight"])
    with pytest.raises(BadInput, match=r"holds only the trainable tensors \(frozen_omitted\).*set model.pretrained"):
        rebuild_model(tiny_cfg("policy.type=linear_probe"), read_checkpoint(path))
    with pytest.raises(ValueError, match="different frozen weights"):
        rebuild_model(tiny_cfg("policy.type=linear_probe", f"model.pretrained={other}"), read_checkpoint(path))


def test_predict_py_says_its_new_name(capsys):
    from tools import predict

    assert predict.main(["cfg.py", "ckpt.pt", "img.jpg"]) == 2
    assert "tools/predict.py is now tools/detect.py" in capsys.readouterr().err
