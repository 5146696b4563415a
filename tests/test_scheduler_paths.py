"""Every scheduler path gives each parameter its intended LR, checked against the other side's code.

Intended: ``value(t) x lr_scale``, where ``value(t)`` is what the same scheduler gives a single group
at the base LR (torch / transformers / mmengine), or the LR timm's own
``param_groups_layer_decay`` groups get per parameter under the same timm scheduler.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.optim import param_groups_layer_decay
from timm.scheduler import CosineLRScheduler, StepLRScheduler, create_scheduler_v2

from recipes import build_param_groups, build_schedule
from recipes.integrations import current_base_lr
from recipes.integrations.timm import create_optimizer, timm_scheduler_groups

LR, DECAY, WD, STEPS = 1e-3, 0.75, 0.05, 24
STRATEGY = dict(type="layer_decay", lr=LR, decay=DECAY, weight_decay=WD)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=5, num_classes=10)


def per_param(model, optimizer) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}


def assert_ratios(optimizer, ref_lr: float) -> None:
    """Every group at ``ref_lr x lr_scale``."""
    for g in optimizer.param_groups:
        assert g["lr"] == pytest.approx(ref_lr * g["lr_scale"], rel=1e-9, abs=1e-15), g["name"]


def one_group(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)


# --- timm's schedulers, against timm's own groups --------------------------------------------
def timm_own(model):
    groups = param_groups_layer_decay(model, WD, model.no_weight_decay(), layer_decay=DECAY)
    return torch.optim.AdamW(groups, lr=LR)


TIMM_SCHEDULERS = {
    "cosine": lambda o: CosineLRScheduler(
        o, t_initial=STEPS, lr_min=1e-5, warmup_t=4, warmup_lr_init=1e-5, t_in_epochs=False
    ),
    "step": lambda o: StepLRScheduler(o, decay_t=5, decay_rate=0.5, warmup_t=3, warmup_lr_init=2e-5, t_in_epochs=False),
    **{
        f"v2_{kind}": (
            lambda o, kind=kind: create_scheduler_v2(
                o,
                sched=kind,
                num_epochs=6,
                warmup_epochs=1,
                updates_per_epoch=4,
                step_on_epochs=False,
                min_lr=1e-5,
                warmup_lr=1e-6,
                decay_milestones=(2, 4),
            )[0]
        )
        for kind in ("cosine", "tanh", "step", "multistep", "poly")
    },
}


@pytest.mark.parametrize("kind", list(TIMM_SCHEDULERS))
def test_timm_scheduler_groups_equal_timm_per_parameter(model, kind):
    ours = torch.optim.AdamW(timm_scheduler_groups(build_param_groups(model, STRATEGY)), lr=LR)
    theirs = timm_own(model)
    s_ours, s_theirs = TIMM_SCHEDULERS[kind](ours), TIMM_SCHEDULERS[kind](theirs)
    for t in range(STEPS + 1):
        s_ours.step_update(t)
        s_theirs.step_update(t)
        expect = per_param(model, theirs)
        got = per_param(model, ours)
        assert got == pytest.approx(expect, rel=1e-9, abs=1e-15), f"{kind} at update {t}"
        if t == STEPS // 2:
            assert len(set(expect.values())) > 3  # layer decay is really in play


def test_plain_groups_under_timm_are_scaled_twice(model):
    """Why timm_scheduler_groups exists: the embedding group at decay**6 = 0.178x its intended LR."""
    plain = build_param_groups(model, STRATEGY)
    opt = torch.optim.AdamW(plain, lr=LR)
    CosineLRScheduler(opt, t_initial=STEPS, t_in_epochs=False).step_update(0)
    embed = next(g for g in opt.param_groups if g["name"].startswith("embed"))
    assert embed["lr"] == pytest.approx(LR * embed["lr_scale"] ** 2)
    assert embed["lr_scale"] == pytest.approx(DECAY**6)


def test_create_optimizer_scheduler_kind(model):
    """``scheduler="timm"`` groups are right under timm's schedulers, ``"torch"`` ones under torch's."""
    timm_ready = create_optimizer(model, STRATEGY, optimizer="adamw", scheduler="timm", betas=(0.9, 0.95))
    torch_ready = create_optimizer(model, STRATEGY, optimizer="adamw", scheduler="torch")
    assert timm_ready.defaults["betas"] == (0.9, 0.95) and timm_ready.defaults["lr"] == LR
    theirs = timm_own(model)
    for opt in (timm_ready, theirs):
        CosineLRScheduler(opt, t_initial=STEPS, lr_min=1e-5, t_in_epochs=False).step_update(5)
    assert per_param(model, timm_ready) == pytest.approx(per_param(model, theirs), rel=1e-9)
    half = torch.optim.lr_scheduler.LambdaLR(torch_ready, lambda s: 0.5)
    assert_ratios(torch_ready, LR * 0.5)
    # crossed over, each is wrong: timm scales torch-ready groups twice, torch flattens timm-ready ones
    crossed = [create_optimizer(model, STRATEGY, scheduler="torch"), create_optimizer(model, STRATEGY)]
    CosineLRScheduler(crossed[0], t_initial=STEPS, t_in_epochs=False).step_update(5)
    half = torch.optim.lr_scheduler.LambdaLR(crossed[1], lambda s: 0.5)
    assert half.get_last_lr() == [LR * 0.5] * len(crossed[1].param_groups)
    for opt in crossed:
        with pytest.raises(ValueError, match="did not keep the ratios"):
            current_base_lr(opt.param_groups)


def test_create_optimizer_refuses_grouping_options(model):
    with pytest.raises(TypeError, match="layer_decay"):
        create_optimizer(model, STRATEGY, layer_decay=0.65)
    with pytest.raises(ValueError, match="scheduler must be"):
        create_optimizer(model, STRATEGY, scheduler="lightning")


# --- torch schedulers: every group scaled from its own initial lr ----------------------------
def _seq(o):
    warm = torch.optim.lr_scheduler.LinearLR(o, start_factor=0.01, total_iters=4)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS - 4)
    return torch.optim.lr_scheduler.SequentialLR(o, [warm, cos], milestones=[4])


def _max_lrs(o):
    return [g["lr"] for g in o.param_groups]  # one peak per group: a single float flattens them


TORCH_SCHEDULERS = {
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / 5) * 0.97**s),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
    "CosineAnnealingWarmRestarts": lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=7),
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    "MultiStepLR": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 11], gamma=0.3),
    "ExponentialLR": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    "PolynomialLR": lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=STEPS, power=2.0),
    "SequentialLR": _seq,
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=_max_lrs(o), total_steps=STEPS + 1),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=[x * 0.1 for x in _max_lrs(o)], max_lr=_max_lrs(o), step_size_up=5, cycle_momentum=False
    ),
}


@pytest.mark.parametrize("kind", list(TORCH_SCHEDULERS))
def test_torch_schedulers_keep_every_group_at_its_scale(model, kind):
    opt = torch.optim.AdamW(build_param_groups(model, STRATEGY))
    ref = one_group()
    s, s_ref = TORCH_SCHEDULERS[kind](opt), TORCH_SCHEDULERS[kind](ref)
    for _ in range(STEPS):
        assert_ratios(opt, ref.param_groups[0]["lr"])
        assert current_base_lr(opt.param_groups) == pytest.approx(ref.param_groups[0]["lr"])
        opt.step(), ref.step(), s.step(), s_ref.step()


@pytest.mark.parametrize(
    "make",
    [
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS, eta_min=1e-4),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=LR, total_steps=STEPS + 1),
    ],
    ids=["absolute_eta_min", "one_max_lr"],
)
def test_torch_traps_are_reported_by_current_base_lr(model, make):
    opt = torch.optim.AdamW(build_param_groups(model, STRATEGY))
    s = make(opt)
    for _ in range(STEPS):
        opt.step(), s.step()
    with pytest.raises(ValueError, match="did not keep the ratios"):
        current_base_lr(opt.param_groups)


@pytest.mark.parametrize("floor_mode", ["relative", "absolute"])
def test_recipes_schedule_lambda_lr(model, floor_mode):
    sched = build_schedule(dict(type="cosine", warmup_steps=4, min_lr=2e-5, floor_mode=floor_mode), STEPS, lr=LR)
    opt = torch.optim.AdamW(build_param_groups(model, STRATEGY))
    lam = sched.lambda_lr(opt)
    for step in range(STEPS + 1):
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(sched.group_lr(step, g["lr_scale"]), rel=1e-9, abs=1e-15)
        opt.step(), lam.step()


# --- transformers' get_scheduler ---------------------------------------------------------------
HF_KINDS = {
    "linear": {},
    "cosine": {},
    "cosine_with_restarts": {"num_cycles": 2},
    "polynomial": {"lr_end": 1e-5, "power": 2.0},
    "constant": {},
    "constant_with_warmup": {},
    "inverse_sqrt": {},
    "cosine_with_min_lr": {"min_lr": 1e-5},
    "cosine_warmup_with_min_lr": {"min_lr_rate": 0.05},
    "warmup_stable_decay": {"num_decay_steps": 8, "min_lr_ratio": 0.1},
}


@pytest.mark.parametrize("kind", list(HF_KINDS))
def test_transformers_get_scheduler(model, kind):
    from transformers import get_scheduler

    # the optimizer's default lr must be the base LR: transformers reads min_lr / lr_end against it
    opt = torch.optim.AdamW(build_param_groups(model, STRATEGY), lr=LR)
    ref = one_group()
    kw = dict(num_warmup_steps=4, num_training_steps=STEPS, scheduler_specific_kwargs=HF_KINDS[kind])
    s, s_ref = get_scheduler(kind, opt, **kw), get_scheduler(kind, ref, **kw)
    for _ in range(STEPS):
        assert_ratios(opt, ref.param_groups[0]["lr"])
        opt.step(), ref.step(), s.step(), s_ref.step()


# --- mmengine param schedulers (a real Runner run is in test_integrations_mmengine.py) ---------
@pytest.mark.filterwarnings("ignore:Detected call of")
@pytest.mark.parametrize("floor", ["eta_min_ratio", "eta_min"])
def test_mmengine_param_schedulers(model, floor):
    from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper

    wrappers = [
        OptimWrapper(torch.optim.AdamW(build_param_groups(model, STRATEGY), lr=LR)),
        OptimWrapper(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)),
    ]
    kw = {floor: 0.01 if floor == "eta_min_ratio" else 1e-4}
    scheds = [
        [
            LinearLR(w, start_factor=0.1, by_epoch=False, begin=0, end=4),
            CosineAnnealingLR(w, T_max=STEPS - 4, by_epoch=False, begin=4, end=STEPS, **kw),
        ]
        for w in wrappers
    ]
    for _ in range(STEPS):
        ref = wrappers[1].param_groups[0]["lr"]
        if floor == "eta_min_ratio":  # mmengine's base_lr pseudo group is scheduled with the others
            assert_ratios(wrappers[0].optimizer, ref)
            assert wrappers[0].get_lr()["base_lr"][0] == pytest.approx(ref)
        for w, ss in zip(wrappers, scheds, strict=True):
            w.optimizer.step()
            for sc in ss:
                sc.step()
    if floor == "eta_min":  # an absolute floor: every group ends near 1e-4, the ratios are gone
        with pytest.raises(ValueError, match="did not keep the ratios"):
            current_base_lr(wrappers[0].optimizer.param_groups)


# --- the BEiT / VideoMAEv2 hand-off: lr = schedule[it] * lr_scale each step ------------
def test_beit_handoff(model):
    sched = build_schedule(
        dict(type="cosine", warmup_steps=4, min_lr=1e-6, weight_decay=WD, weight_decay_end=0.2), STEPS, lr=LR
    )
    lr_values = [sched.value(i) for i in range(STEPS)]  # the per-step array the hand-off indexes
    wd_values = [sched.weight_decay_value(i) for i in range(STEPS)]
    opt = torch.optim.AdamW(build_param_groups(model, STRATEGY))
    for it in range(STEPS):
        for g in opt.param_groups:  # engine_for_tracking.train_one_epoch, verbatim semantics
            g["lr"] = lr_values[it] * g.get("lr_scale", 1.0)
            if g.get("weight_decay", 0) > 0:
                g["weight_decay"] = wd_values[it]
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(sched.group_lr(it, g["lr_scale"]), rel=1e-12)
        assert current_base_lr(opt.param_groups) == pytest.approx(lr_values[it])
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    assert decayed and all(math.isclose(g["weight_decay"], wd_values[-1]) for g in decayed)


def test_timm_scheduler_groups_refuses_groups_a_scheduler_already_ran_on(model):
    opt = torch.optim.AdamW(build_param_groups(model, STRATEGY))
    torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # records initial_lr in every group
    with pytest.raises(ValueError, match="already has an initial_lr"):
        timm_scheduler_groups(opt.param_groups)
    with pytest.raises(ValueError, match="every group has lr_scale 0"):
        current_base_lr([dict(lr=0.0, lr_scale=0.0)])
