"""The mmengine constructor, from a plain config file, in a real ``mmengine.runner.Runner`` run."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

from recipes.integrations import current_base_lr
from recipes.integrations.mmengine import RecipesOptimWrapperConstructor

LR, DECAY, WD = 1e-3, 0.75, 0.05
CONFIG = """
custom_imports = dict(imports=["recipes.integrations.mmengine"], allow_failed_imports=False)
optim_wrapper = dict(
    constructor="RecipesOptimWrapperConstructor",
    optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(strategy=dict(type="layer_decay", decay=0.75), adapter="auto", prefix="backbone."),
)
"""


class Classifier(BaseModel):
    """The mmpretrain layout: a timm ViT under ``backbone.``, a linear head beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = timm.create_model(
            "vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, num_heads=2, depth=3, num_classes=0
        )
        self.head = torch.nn.Linear(self.backbone.num_features, 10)

    def forward(self, inputs, labels=None, mode="tensor"):
        logits = self.head(self.backbone(inputs))
        return dict(loss=F.cross_entropy(logits, labels)) if mode == "loss" else logits


class LRRecorder(Hook):
    """Each iteration's group LRs (after mmengine's schedulers set them) and mmengine's logged base_lr."""

    def __init__(self) -> None:
        self.rows: list[tuple[list[float], float]] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        groups = runner.optim_wrapper.optimizer.param_groups
        self.rows.append(([g["lr"] for g in groups], runner.message_hub.get_scalar("train/base_lr").current()))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: thread hand-offs cost more than the maths on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def cfg(tmp_path):
    path = tmp_path / "optim.py"
    path.write_text(CONFIG)
    return Config.fromfile(str(path))


def mmpretrain_layer_id(name: str, num_blocks: int) -> int:
    """mmpretrain 1.2's ``get_layer_id_for_vit`` (LearningRateDecayOptimWrapperConstructor), for timm's names."""
    if name.startswith("backbone.") and any(k in name for k in ("patch_embed", "pos_embed", ".cls_token")):
        return 0
    if name.startswith("backbone.blocks."):
        return int(name.split(".")[2]) + 1
    return num_blocks + 1  # everything else (the backbone's final norm, the head): scale 1


@pytest.mark.parametrize("final_norm", [True, False])
def test_constructor_from_a_config_file_follows_mmpretrains_layer_decay_rule(cfg, final_norm):
    """prefix='backbone.': the last block gets ``decay`` and the head 1.0, with or without a final norm
    (timm's rule on the headless backbone alone gives its last layer 1.0: docs/integrations.md)."""
    torch.manual_seed(0)
    model = Classifier()
    if not final_norm:
        model.backbone.norm = torch.nn.Identity()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    ours = {n: (g["lr"], g["weight_decay"]) for g in wrapper.optimizer.param_groups for n in g["param_names"]}
    no_decay = {"backbone.cls_token", "backbone.pos_embed"}
    for name, p in model.named_parameters():
        scale = DECAY ** (3 + 1 - mmpretrain_layer_id(name, 3))
        wd = 0.0 if p.ndim <= 1 or name.endswith(".bias") or name in no_decay else WD
        assert ours[name] == pytest.approx((LR * scale, wd), rel=1e-12), name
    assert ours["backbone.blocks.2.attn.qkv.weight"] == pytest.approx((LR * DECAY, WD))
    assert len(ours) == len(list(model.parameters()))
    assert wrapper.optimizer.defaults["lr"] == LR


def test_no_weight_decay_given_follows_the_optimizers_default(cfg):
    """Neither the optimizer nor the strategy sets weight_decay: AdamW's own 0.01, as mmengine's constructor."""
    optim = {**cfg.optim_wrapper, "optimizer": dict(type="AdamW", lr=LR)}
    groups = build_optim_wrapper(Classifier(), optim).optimizer.param_groups
    assert {g["weight_decay"] for g in groups} == {0.0, 0.01}
    optim["optimizer"] = dict(type="SGD", lr=LR)  # SGD's default is 0
    assert {g["weight_decay"] for g in build_optim_wrapper(Classifier(), optim).optimizer.param_groups} == {0.0}


def test_paramwise_cfg_errors(cfg):
    model = Classifier()
    bad = [
        (
            dict(paramwise_cfg=dict(strategy=dict(type="layer_decay", decay=0.75), norm_decay_mult=0.0)),
            "norm_decay_mult",
        ),
        (dict(paramwise_cfg=dict(strategy=dict(type="layer_decay", decay=0.75, lr=3e-4))), "give it in one place"),
        (
            dict(paramwise_cfg=dict(strategy=dict(type="layer_decay", decay=0.75), prefix="neck.")),
            "no submodule 'neck'",
        ),
        (dict(paramwise_cfg=dict(adapter="auto")), "needs a `strategy`"),
    ]
    for change, message in bad:
        with pytest.raises((KeyError, ValueError), match=message):
            build_optim_wrapper(model, {**cfg.optim_wrapper, **change})
    # without the prefix, no adapter knows the wrapper model: the prefix is what makes it work
    with pytest.raises(ValueError, match="no registered adapter"):
        build_optim_wrapper(
            model, {**cfg.optim_wrapper, "paramwise_cfg": dict(strategy=dict(type="layer_decay", decay=0.75))}
        )


@pytest.mark.filterwarnings("ignore:Detected call of")  # mmengine steps its schedulers this way round
def test_runner_run_keeps_the_ratios_under_mmengine_schedulers(cfg, tmp_path):
    torch.manual_seed(0)
    data = [
        dict(inputs=torch.randn(3, 16, 16), labels=i % 10) for i in range(12)
    ]  # one pass: no epoch turn (mmengine sleeps 2 s there)
    recorder = LRRecorder()
    runner = Runner(
        model=Classifier(),
        work_dir=str(tmp_path / "work"),
        train_dataloader=dict(
            dataset=data,
            sampler=dict(type="DefaultSampler", shuffle=False),
            batch_size=2,
            collate_fn=dict(type="default_collate"),
            num_workers=0,
        ),  # fmt: skip
        train_cfg=dict(by_epoch=False, max_iters=6),
        optim_wrapper=cfg.optim_wrapper,
        param_scheduler=[
            dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=3),
            dict(type="CosineAnnealingLR", eta_min_ratio=0.01, by_epoch=False, begin=3, end=6, T_max=3),
        ],
        default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=1)),
        custom_hooks=[recorder],
        default_scope="mmengine",
    )
    runner.train()
    # the same schedulers on one group at the base LR give the intended base value per iteration
    ref = build_optim_wrapper(torch.nn.Linear(1, 1), dict(optimizer=dict(type="AdamW", lr=LR)))
    from mmengine.optim import CosineAnnealingLR, LinearLR

    scheds = [LinearLR(ref, start_factor=0.1, by_epoch=False, begin=0, end=3),
              CosineAnnealingLR(ref, eta_min_ratio=0.01, by_epoch=False, begin=3, end=6, T_max=3)]  # fmt: skip
    groups = runner.optim_wrapper.optimizer.param_groups
    assert len(recorder.rows) == 6
    for lrs, logged in recorder.rows:
        base = ref.param_groups[0]["lr"]
        for g, lr in zip(groups, lrs, strict=True):
            assert lr == pytest.approx(base * g["lr_scale"], rel=1e-9), g["name"]
        assert logged == pytest.approx(base, rel=1e-9)  # mmengine's "base_lr" is the scheduled base value
        for s in scheds:
            s.step()
    assert current_base_lr(groups) > 0
    assert isinstance(RecipesOptimWrapperConstructor, type)


def _runner(cfg, work_dir, iters: int, resume: bool) -> Runner:
    data = [dict(inputs=torch.randn(3, 16, 16), labels=i % 10) for i in range(12)]
    return Runner(model=Classifier(), work_dir=str(work_dir), resume=resume,
                  train_dataloader=dict(dataset=data, sampler=dict(type="DefaultSampler", shuffle=False), batch_size=2,
                                        collate_fn=dict(type="default_collate"), num_workers=0),
                  train_cfg=dict(by_epoch=False, max_iters=iters), optim_wrapper=cfg.optim_wrapper,
                  default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False)),
                  default_scope="mmengine")  # fmt: skip


def test_runner_resume_with_the_documented_workaround(cfg, tmp_path, monkeypatch):
    """docs/integrations.md: mmengine 0.10.7's resume on torch >= 2.6 with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1."""
    torch.manual_seed(0)
    _runner(cfg, tmp_path, 2, False).train()
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    runner = _runner(cfg, tmp_path, 4, True)
    runner.train()
    assert runner.iter == 4 and (tmp_path / "iter_4.pth").is_file()
    groups = runner.optim_wrapper.optimizer.param_groups
    assert current_base_lr(groups) == pytest.approx(LR)  # the ratios survive the resume
