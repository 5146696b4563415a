"""Every shipped config loads, and tools/show_lr.py runs end to end on the default one."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "configs" / "tune"  # search spaces for tools/tune.py, loaded by tests/test_tune.py
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.py") if not p.name.startswith("_") and SPACES not in p.parents)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_config_loads_and_says_what_it_does(path):
    from recipes.train.config_check import check_config
    from recipes.train.registry import TASKS
    from recipes.train.tasks.base import task_options

    cfg = load_config(path)
    check_config(cfg)  # every section and train.* key of a shipped config is read by something
    task = dict(cfg.get("task") or {})
    known = task_options(TASKS.lookup(task.pop("type", "classification")))
    assert set(task) <= known, f"{path.name}: task options {set(task) - known} are not declared by the task"
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path.name}: a config starts with a comment saying what it trains"


TINY = ["model.depth=1", "model.embed_dim=12", "model.num_heads=1", "data.train.holdout=0.9", "data.train.part=main"]
NOT_READ = "is not read by anything"


@pytest.mark.parametrize(
    "option, message",
    [
        ("task.label_smooting=0.3", rf"`task.label_smooting` {NOT_READ} \(did you mean 'label_smoothing'\?\)"),
        ("task.type=clasification", r"unknown tasks 'clasification'. Did you mean 'classification'\?"),
        ("data.train.holdut=0.5", rf"`data.train.holdut` {NOT_READ} \(did you mean 'holdout'\?\)"),
        ("data.tset.type=digits", rf"`data.tset` {NOT_READ} \(did you mean 'test'\?\)"),
        ("data.train.type=digitz", r"unknown datasets 'digitz'. Did you mean 'digits'\?"),
        ("train.epochz=3", rf"`train.epochz` {NOT_READ} \(did you mean 'epochs'\?\)"),
        ("train.drop_last=False", r"`train.drop_last`: the engine always drops each rank's last partial batch"),
        ("trian.epochs=3", rf"`trian` {NOT_READ} \(did you mean 'train'\?\)"),
        ("model.dept=3", rf"`model.dept` {NOT_READ} \(did you mean 'depth'\?\)"),
        ("model.type=tim", r"unknown models 'tim'. Did you mean 'timm'\?"),
        ("optimizer.betaz=[0.9,0.99]", rf"`optimizer.betaz` {NOT_READ} \(did you mean 'betas'\?\)"),
        (
            "optimizer.type=lamb optimizer.trust_clp=1",
            rf"`optimizer.trust_clp` {NOT_READ} \(did you mean 'trust_clip'\?\)",
        ),
        ("optimizer.type=AdamWW", r"unknown optimizers 'AdamWW'. Did you mean 'AdamW'\?"),
        ("optimizer.lr=0.1", r"`optimizer.lr` would be ignored"),
        ("strategy.decy=0.5", rf"`strategy.decy` {NOT_READ} \(did you mean 'decay'\?\)"),
        ("strategy.lr=-1", r"strategy.lr"),
        ("schedule.warmup_epochz=1", rf"`schedule.warmup_epochz` {NOT_READ} \(did you mean 'warmup_epochs'\?\)"),
        ("schedule.type=cosin", r"unknown schedules 'cosin'. Did you mean 'cosine'\?"),
        ("policy.type=full policy.rr=4", rf"`policy.rr` {NOT_READ} \(did you mean 'r'\?\)"),
        ("policy.type=lora_onyl", r"policy.type must be one of"),
        ("adapter=timm_vitt", r"unknown adapters 'timm_vitt'"),
    ],
)
def test_a_typo_in_any_section_fails_before_data_or_model(option, message, monkeypatch):
    """Every section is checked first: reading data or building a model fails the test, so the error can only
    come from the config check (as mmengine checks before it builds)."""
    import recipes.train.build as build
    from recipes.train.config_check import check_config
    from recipes.train.tasks.classification import ClassificationTask

    def untouched(*args, **kwargs):
        raise AssertionError("data were read or a model was built before the config was checked")

    monkeypatch.setattr(build, "build_model", untouched)
    monkeypatch.setattr(ClassificationTask, "build_datasets", untouched)
    cfg = load_config(ROOT / "configs" / "default.py", [*TINY, *option.split()])
    with pytest.raises((KeyError, ValueError, TypeError), match=message):
        check_config(cfg)
    with pytest.raises((KeyError, ValueError, TypeError), match=message):
        build.prepare_run(cfg)


@pytest.mark.parametrize(
    "config, option, new",
    [
        ("default.py", "model.pretrained_file=w.pth", "model.pretrained"),
        ("detection/rfdetr_nano.py", "model.pretrain_weights=w.pth", "model.pretrained"),
        ("tracking/videomae_dinov2_cpu.py", "model.init=/weights/dinov2_small", "model.pretrained"),
        ("tracking/videomae_dinov2_cpu.py", "model.strict_init=False", "model.strict_pretrained"),
        ("diffusion/flux_lora.py", "task.gradient_checkpointing=True", "train.grad_checkpointing"),
        ("diffusion/flux_lora.py", "task.lora=None", "policy"),
        ("detection/rfdetr_nano.py", "task.lora=True", "policy"),
    ],
)
def test_an_old_name_is_an_error_saying_the_new_one(config, option, new):
    """One weights key (model.pretrained), one gradient-checkpointing switch and one LoRA switch, in every task."""
    from recipes.train.config_check import check_config

    cfg = load_config(ROOT / "configs" / config, [option])
    with pytest.raises(KeyError, match=rf"`{option.split('=')[0]}` is now `{new}`"):
        check_config(cfg)


@pytest.mark.parametrize(
    "option, message",
    [
        ("policy.type=full", None),  # a valid policy: no error
        ("train.freeze.param=blocks", rf"`train.freeze.param` {NOT_READ} \(did you mean 'params'\?\)"),
        ("train.save_frozen=sometimes", r"train.save_frozen must be 'auto', True or False"),
        ("train.steps_per_epoch=5", r"train.steps_per_epoch=5 but the training data gives 3 per epoch"),
        ("train.epochs=2.5", r"train.epochs must be a whole number >= 1, got 2.5"),
        ("task.type=detection", rf"`task.label_smoothing` {NOT_READ}; known: expanded_scales"),
    ],
)
def test_values_that_need_the_data_or_the_model_fail_at_setup(option, message):
    from recipes.train.build import prepare_run

    cfg = load_config(ROOT / "configs" / "default.py", [*TINY, *option.split()])
    if message is None:
        prepare_run(cfg)
        return
    with pytest.raises((KeyError, ValueError, TypeError), match=message):
        prepare_run(cfg)


@pytest.mark.parametrize("key", ["loraplus_ratio=4", "lr_lora=1e-3"])
def test_lora_options_on_a_model_without_lora_warn(key):
    """peft-style: an option that cannot act says so (no policy: the tiny ViT has no LoRA tensor)."""
    from recipes.train.build import prepare_run

    cfg = load_config(ROOT / "configs" / "default.py", [*TINY, f"strategy.{key}"])
    with pytest.warns(UserWarning, match=rf"strategy.{key.split('=')[0]}=.* has no effect: the model has no trainable"):
        prepare_run(cfg)


def test_lora_options_with_lora_do_not_warn():
    import warnings

    from recipes.train.build import prepare_run

    cfg = load_config(
        ROOT / "configs" / "default.py",
        [*TINY, "strategy.loraplus_ratio=4", "policy.type=lora_only", "policy.r=2"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        prepare_run(cfg)


def test_loraplus_on_lokr_warns_and_lr_lora_acts():
    """LoKr has no LoRA B tensor, so LoRA+ cannot act (a warning); lr_lora sets its tensors' LR (no warning)."""
    import warnings

    from recipes.train.build import prepare_run

    lokr = [*TINY, "policy.type=lora_only", "policy.kind=lokr", "policy.r=2"]
    cfg = load_config(ROOT / "configs" / "default.py", [*lokr, "strategy.loraplus_ratio=4"])
    with pytest.warns(UserWarning, match=r"strategy.loraplus_ratio=4 has no effect: the model has lokr tensors"):
        prepare_run(cfg)
    cfg = load_config(ROOT / "configs" / "default.py", [*lokr, "strategy.lr_lora=1e-4"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        groups = prepare_run(cfg).groups
    lrs = {g["lr"] for g in groups for n in g["param_names"] if "lokr_" in n}
    assert lrs and max(lrs) <= 1e-4 and lrs != {g["lr"] for g in groups if "head" in g["name"]}


def test_show_lr_default_shows_the_model_train_py_trains(tmp_path, capsys):
    """The default config trains 10 digit classes: show_lr builds that head (it printed a 1000-class one)."""
    from tools.show_lr import main

    assert main([str(ROOT / "configs" / "default.py"), "--out-dir", str(tmp_path), "--csv"]) == 0
    out = capsys.readouterr().out
    assert "[default] groups=" in out and "coverage: " in out
    head = [line.split() for line in out.splitlines() if line.strip().startswith("head.")]
    assert sorted(t for row in head for t in row if t.startswith("params=")) == [
        "params=10",
        "params=960",
    ]  # 96 x 10 weights, 10 biases
    assert (tmp_path / "lr_schedule.png").stat().st_size > 10_000
    rows = (tmp_path / "lr_schedule.csv").read_text().splitlines()
    assert rows[0].startswith("step,base_lr,") and len(rows) > 10


def test_missing_config_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="does not exist; the shipped ones are in configs/"):
        load_config(ROOT / "configs" / "nope.py")


def test_old_recipe_section_is_a_clear_error(tmp_path):
    cfg = tmp_path / "old.py"
    cfg.write_text('model = dict(type="timm")\nrecipe = dict(type="flat", lr=1e-3)\nschedule = dict(type="constant")\n')
    with pytest.raises(KeyError, match="now called `strategy`"):
        load_config(cfg)


@pytest.mark.parametrize(
    "config, option, message",
    [
        (
            "detection/rfdetr_nano.py",
            "data.train.scale_jiter=False",
            rf"`data.train.scale_jiter` {NOT_READ} \(did you mean 'scale_jitter'\?\)",
        ),
        (
            "detection/rfdetr_nano.py",
            "model.resolutoin=320",
            rf"`model.resolutoin` {NOT_READ} \(did you mean 'resolution'\?\)",
        ),
        (
            "tracking/videomae_dinov2_cpu.py",
            "model.hiden_size=32",
            rf"`model.hiden_size` {NOT_READ} \(did you mean 'hidden_size'\?\)",
        ),
        ("diffusion/sd15_lora.py", "model.dtpye=float32", rf"`model.dtpye` {NOT_READ} \(did you mean 'dtype'\?\)"),
    ],
)
def test_other_tasks_typos_fail_in_the_config_check(config, option, message):
    """Keys that go through ``**kwargs`` to upstream classes (rfdetr's ModelConfig, VideoMAEConfig, the COCO
    dataset's augmentations) are checked too, without building anything."""
    from recipes.train.config_check import check_config

    with pytest.raises(KeyError, match=message):
        check_config(load_config(ROOT / "configs" / config, [option]))
