"""Step schedules: closed forms, floors, ratio preservation, resume, LambdaLR, weight decay."""

from __future__ import annotations

import math

import pytest
import torch

from recipes import build_schedule


def two_group_optimizer(wd=(0.05, 0.0), scales=(1.0, 0.75)):
    ps = [torch.nn.Parameter(torch.zeros(2)) for _ in scales]
    groups = [dict(params=[p], lr=4e-4 * s, lr_scale=s, weight_decay=w) for p, s, w in zip(ps, scales, wd, strict=True)]
    return torch.optim.AdamW(groups)


def test_noam_formula_is_authoritative():
    """Noam's published example table says 1.56e-4 at step 4000; its own formula gives 6.99e-4 (we follow the formula)."""
    s = build_schedule(dict(type="noam", d_model=512, warmup_steps=4000), total_steps=40_000)
    formula = lambda n: 512**-0.5 * min(n**-0.5, n * 4000**-1.5)  # noqa: E731
    assert s.value(3999) == pytest.approx(6.98771242e-4, rel=1e-8)  # global step 3999 is step_num 4000
    for step in (0, 999, 3998, 3999, 7999, 15_999, 31_999):
        assert s.value(step) == formula(step + 1)
    assert max(range(0, 10_000, 7), key=s.value) in range(3990, 4000)


def test_cosine_relative_floor_keeps_ratios():
    s = build_schedule(dict(type="cosine", lr=4e-4, warmup_steps=10, min_lr=1e-5), total_steps=110)
    assert s.value(0) == 0.0 and s.value(5) == pytest.approx(2e-4) and s.value(10) == pytest.approx(4e-4)
    assert s.value(60) == pytest.approx(1e-5 + (4e-4 - 1e-5) * 0.5)
    assert s.value(110) == pytest.approx(1e-5) and s.value(500) == pytest.approx(1e-5)
    opt = two_group_optimizer()
    for step in range(0, 111, 7):
        s.apply(opt, step)
        a, b = (g["lr"] for g in opt.param_groups)
        if a:
            assert a / b == pytest.approx(4 / 3, rel=1e-12)  # the 4:3 ratio of the two groups at every step
    s.apply(opt, 110)
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-5 * 0.75)  # floor relative to the group's peak


def test_absolute_floor_on_request():
    s = build_schedule(dict(type="cosine", lr=1e-3, min_lr=1e-5, floor_mode="absolute"), total_steps=100)
    opt = two_group_optimizer(scales=(1.0, 0.1))
    s.apply(opt, 100)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5, 1e-5])
    s.apply(opt, 0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-4])


@pytest.mark.parametrize(
    "cfg,checks",
    [
        (dict(type="linear", lr=1.0, warmup_steps=2, warmup_start_lr=0.5), {0: 0.5, 1: 0.75, 2: 1.0, 6: 0.5, 10: 0.0}),
        (dict(type="constant", lr=1.0, warmup_steps=4), {0: 0.0, 2: 0.5, 4: 1.0, 9: 1.0}),
        (dict(type="step", lr=1.0, step_size=3, gamma=0.5), {0: 1.0, 2: 1.0, 3: 0.5, 6: 0.25}),
        (dict(type="multistep", lr=1.0, milestones=[4, 7], gamma=0.1), {3: 1.0, 4: 0.1, 7: 0.01}),
        (dict(type="wsd", lr=1.0, warmup_steps=2, decay_steps=4), {1: 0.5, 2: 1.0, 6: 1.0, 8: 0.5, 10: 0.0}),
        (dict(type="wsd", lr=1.0, decay_steps=4, decay_shape="sqrt"), {6: 1.0, 7: 0.5, 10: 0.0}),
        (dict(type="inverse_sqrt", lr=1.0, warmup_steps=4), {2: 0.5, 4: 1.0, 8: math.sqrt(0.5)}),
    ],
)
def test_closed_forms(cfg, checks):
    s = build_schedule(cfg, total_steps=10)
    for step, want in checks.items():
        assert s.value(step) == pytest.approx(want), (step, s.value(step), want)


def test_resume_at_any_step_is_exact():
    """A pure function of the step: a fresh schedule at step k equals a running one at step k."""
    cfg = dict(type="cosine", lr=1e-3, warmup_steps=5, min_lr_ratio=0.01, weight_decay=0.05, weight_decay_end=0.2)
    running, opt = build_schedule(cfg, total_steps=50), two_group_optimizer()
    built = [g["weight_decay"] for g in opt.param_groups]
    for step in range(50):
        running.apply(opt, step, built)
        state = opt.state_dict()
        fresh_opt = two_group_optimizer()
        fresh_built = [g["weight_decay"] for g in fresh_opt.param_groups]  # before the checkpoint's are loaded
        fresh_opt.load_state_dict(state)
        assert set(opt.param_groups[0]) == set(two_group_optimizer().param_groups[0])  # apply adds no key
        build_schedule(cfg, total_steps=50).apply(fresh_opt, step, fresh_built)
        assert [g["lr"] for g in fresh_opt.param_groups] == [g["lr"] for g in opt.param_groups]
        assert [g["weight_decay"] for g in fresh_opt.param_groups] == [g["weight_decay"] for g in opt.param_groups]


def test_weight_decay_schedule_only_on_decayed_groups_and_keeps_ratios():
    s = build_schedule(dict(type="cosine", lr=1.0, weight_decay=0.04, weight_decay_end=0.4), total_steps=11)
    opt = two_group_optimizer(wd=(0.04, 0.0))
    opt.add_param_group(dict(params=[torch.nn.Parameter(torch.zeros(1))], lr=1.0, lr_scale=1.0, weight_decay=0.02))
    built = [g["weight_decay"] for g in opt.param_groups]
    s.apply(opt, 10, built)  # any step first: the ratios come from the groups as built, not from a first call
    assert [g["weight_decay"] for g in opt.param_groups] == pytest.approx([0.4, 0.0, 0.2])
    s.apply(opt, 0, built)
    assert [g["weight_decay"] for g in opt.param_groups] == pytest.approx([0.04, 0.0, 0.02])
    assert "wd_scale" not in opt.param_groups[0]
    with pytest.raises(ValueError, match="this schedule changes the weight decay .* pass weight_decays="):
        s.apply(opt, 1)
    with pytest.raises(ValueError, match="2 weight_decays for 3 parameter groups"):
        s.apply(opt, 1, built[:2])
    plain = build_schedule(dict(type="cosine", lr=1.0), total_steps=11)
    plain.apply(opt, 10)  # no weight-decay schedule: nothing to pass, the weight decays stay
    assert [g["weight_decay"] for g in opt.param_groups] == pytest.approx([0.04, 0.0, 0.02])


def test_lambda_lr_matches_apply():
    cfg = dict(type="cosine", lr=4e-4, warmup_steps=3, min_lr=1e-6, floor_mode="absolute")
    s = build_schedule(cfg, total_steps=20)
    a, b = two_group_optimizer(), two_group_optimizer()
    lam = s.lambda_lr(b)
    for step in range(20):
        s.apply(a, step)
        assert [g["lr"] for g in b.param_groups] == pytest.approx(
            [g["lr"] for g in a.param_groups], rel=1e-12, abs=1e-18
        )
        b.step()
        lam.step()


def test_epoch_settings_convert_with_steps_per_epoch():
    s = build_schedule(dict(type="cosine", lr=1.0, warmup_epochs=2), total_steps=100, steps_per_epoch=10)
    assert s.warmup_steps == 20
    s = build_schedule(dict(type="multistep", lr=1.0, milestones_epochs=[3, 6]), total_steps=100, steps_per_epoch=10)
    assert s.milestones == [30, 60]
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        build_schedule(dict(type="cosine", lr=1.0, warmup_epochs=2), total_steps=100)


@pytest.mark.parametrize(
    "cfg,match",
    [
        (dict(type="cosine", lr=1.0, warmup_steps=200), "longer than the schedule"),
        (dict(type="cosine"), "`lr`"),
        (dict(type="cosine", lr=-1.0), ">= 0"),
        (dict(type="cosin", lr=1.0), "Did you mean 'cosine'"),
        (dict(type="cosine", lr=1.0, floor_mode="abs"), "floor_mode"),
        (dict(type="cosine", lr=1.0, warmup_stpes=3), "unexpected keyword"),
        (dict(type="noam", lr=1.0), "factor"),
        (dict(type="cosine", lr=1.0, weight_decay=0.1), "weight_decay_end"),
    ],
)
def test_bad_schedules(cfg, match):
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        build_schedule(cfg, total_steps=100)


def test_every_registered_schedule_applies_the_same_values_in_any_order():
    """``apply()`` on an optimizer (what the engine calls) depends on the step only: shuffled calls on a
    fresh schedule and optimizer give each step's LR and weight decay of an in-order run, per group."""
    from recipes.registry import SCHEDULES

    for name in SCHEDULES.names():
        cfg = dict(type=name) if name == "noam" else dict(type=name, lr=1.0, warmup_steps=2)
        cfg.update(weight_decay=0.05, weight_decay_end=0.2)
        in_order, opt = build_schedule(cfg, total_steps=30), two_group_optimizer()
        built = [g["weight_decay"] for g in opt.param_groups]
        want = {}
        for step in range(30):
            in_order.apply(opt, step, built)
            want[step] = [(g["lr"], g["weight_decay"]) for g in opt.param_groups]
        shuffled, opt2 = build_schedule(cfg, total_steps=30), two_group_optimizer()
        for step in torch.randperm(30, generator=torch.Generator().manual_seed(1)).tolist():
            shuffled.apply(opt2, step, built)
            assert [(g["lr"], g["weight_decay"]) for g in opt2.param_groups] == want[step], (name, step)
        assert len({w[0][0] for w in want.values()}) > 1 and len({w[0][1] for w in want.values()}) > 1, name
        assert all(w[1][1] == 0.0 for w in want.values())  # the no-decay group stays at 0


def test_fit_warmup_cuts_a_long_warmup_but_not_noams_formula():
    with pytest.warns(UserWarning, match="warmup_steps=50 is longer than this run"):
        s = build_schedule(dict(type="cosine", warmup_steps=50), total_steps=5, lr=1.0, fit_warmup=True)
    assert s.warmup_steps == 5 and s.value(4) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="warmup_steps=50 is longer than the schedule"):
        build_schedule(dict(type="cosine", warmup_steps=50), total_steps=5, lr=1.0)
    noam = dict(type="noam", d_model=512, warmup_steps=4000)
    cut = build_schedule(noam, total_steps=10, fit_warmup=True)  # a short run is the start of the same curve
    full = build_schedule(noam, total_steps=10_000)
    assert [cut.value(k) for k in range(10)] == [full.value(k) for k in range(10)]
