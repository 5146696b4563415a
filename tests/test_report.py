"""Inspection: the per-parameter table, labelled LR curves, the component x depth heatmap, show_lr by name."""

from __future__ import annotations

import csv
import json

import pytest
import timm
from timm.optim import param_groups_layer_decay

from recipes import build_param_groups, build_schedule
from recipes.adapter import ModelMap
from recipes.report import (
    describe_for_report,
    format_lr_grid,
    lr_grid,
    lr_table,
    param_table,
    plot_lr,
    plot_lr_heatmap,
    write_table,
)

LR, DECAY, WD = 1e-3, 0.75, 0.05
STRATEGY = dict(type="layer_decay", lr=LR, decay=DECAY, weight_decay=WD)


@pytest.fixture(scope="module")
def vit():
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=10)


@pytest.fixture(scope="module")
def groups(vit):
    return build_param_groups(vit, STRATEGY)


def test_param_table_matches_timm_per_parameter(vit, groups, tmp_path):
    rows = param_table(groups, vit)
    by_name = {r["name"]: r for r in rows}
    assert len(rows) == len(list(vit.parameters()))
    names = {id(p): n for n, p in vit.named_parameters()}
    for g in param_groups_layer_decay(vit, WD, vit.no_weight_decay(), layer_decay=DECAY):
        for p in g["params"]:
            row = by_name[names[id(p)]]
            assert (row["lr"], row["weight_decay"]) == pytest.approx((LR * g["lr_scale"], g["weight_decay"]))
    qkv = by_name["blocks.2.attn.qkv.weight"]
    assert (qkv["layer_id"], qkv["layer"], qkv["component"], qkv["group"]) == (
        3,
        "blocks.02",
        "self_attn",
        "blocks.02.decay",
    )
    assert qkv["shape"] == "576x192" and qkv["numel"] == 576 * 192
    assert by_name["head.bias"]["lr_scale"] == 1.0 and by_name["pos_embed"]["layer"] == "embed"

    write_table(rows, str(tmp_path / "p.json"))
    write_table(rows, str(tmp_path / "p.csv"))
    assert json.loads((tmp_path / "p.json").read_text()) == rows
    with open(tmp_path / "p.csv") as f:
        back = list(csv.DictReader(f))
    assert [r["name"] for r in back] == [r["name"] for r in rows] and float(back[5]["lr"]) == rows[5]["lr"]
    with pytest.raises(ValueError, match=r"\.json or a \.csv"):
        write_table(rows, str(tmp_path / "p.txt"))


def test_lr_curves_are_labelled_one_per_distinct_curve(groups, tmp_path):
    sched = build_schedule(dict(type="cosine", warmup_steps=10, min_lr_ratio=0.01), 100, lr=LR)
    rows = lr_table(groups, sched)
    labels = plot_lr(rows, str(tmp_path / "lr.png"), title="vit")
    # decay / no-decay pairs share a curve and a label; lowest LR first
    assert labels == ["embed", "blocks.00", "blocks.01", "blocks.02", "blocks.03", "head"]
    assert (tmp_path / "lr.png").stat().st_size > 10_000
    few = plot_lr(rows, str(tmp_path / "few.png"), max_labels=3)
    assert few == ["embed", "blocks.01", "blocks.03", "head"]  # every 2nd, and always the top one


def test_heatmap_grid_of_peak_lrs(vit, groups, tmp_path):
    mmap = describe_for_report(vit)
    panels = lr_grid(groups, mmap)["panels"]
    assert list(panels) == ["blocks", "outside"]
    blocks = panels["blocks"]
    assert blocks["columns"] == ["blocks.00", "blocks.01", "blocks.02", "blocks.03"]
    assert set(blocks["components"]) == {"norm", "self_attn", "ffn"}
    for i in range(4):  # block i has layer id i+1; the head id is 5
        assert blocks["lr"][("ffn", f"blocks.{i:02d}")] == pytest.approx(LR * DECAY ** (4 - i))
    assert panels["outside"]["lr"][("embed", "embed")] == pytest.approx(LR * DECAY**5)
    plot_lr_heatmap(groups, mmap, str(tmp_path / "heat.png"))
    assert (tmp_path / "heat.png").stat().st_size > 5_000


class NamedLayers(ModelMap):
    """A map whose family names its layers (what a U-Net adapter gives: IN / MID / OUT)."""

    def layer_label(self, layer_id: int) -> str:
        names = ["IN00", "IN01", "IN02", "MID", "OUT00", "OUT01", "OUT02"]
        return names[layer_id] if layer_id < len(names) else "head"


def test_heatmap_uses_the_familys_layer_names(vit, groups, tmp_path):
    from recipes.report import _families

    base = describe_for_report(vit)
    mmap = NamedLayers(base.adapter, base.params, base.stack_sizes, base.unmatched, base.head_layer_id)
    cols = lr_grid(groups, mmap)["panels"]["blocks"]["columns"]
    assert cols == ["IN01", "IN02", "MID", "OUT00"]
    assert _families(cols) == [2, 3]  # rules drawn between IN | MID | OUT
    rows = param_table(groups, vit, mmap)
    assert {r["layer"] for r in rows} == {"IN00", "IN01", "IN02", "MID", "OUT00", "OUT01"}
    grid = {line.split()[0]: line for line in format_lr_grid(groups, title="vit", mmap=mmap).splitlines()[1:]}
    assert grid["blocks.00.decay"].endswith("layers=IN01")  # the grid prints the same names
    assert grid["blocks.03.no_decay"].endswith("layers=OUT00")
    assert "layers=" not in format_lr_grid(groups)


@pytest.mark.slow
def test_show_lr_by_model_name(tmp_path, capsys):
    """Full-size timm ViT-Ti on meta, and a transformers model from a local config.json: no download."""
    from tools import show_lr

    out = tmp_path / "timm"
    assert show_lr.main(["--timm", "vit_tiny_patch16_224", "--per-param", "json", "--steps", "200",
                         "--out-dir", str(out)]) == 0  # fmt: skip
    rows = json.loads((out / "params.json").read_text())
    assert len(rows) == 152 and {"lr_schedule.png", "lr_heatmap.png"} <= {p.name for p in out.iterdir()}
    from transformers import ViTConfig

    cfg_dir = tmp_path / "tiny_vit"
    ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).save_pretrained(cfg_dir)
    strategy = '{"type": "layer_decay", "lr": 0.002, "decay": 0.5}'
    assert show_lr.main(["--hf", str(cfg_dir), "--strategy", strategy, "--per-param", "csv",
                         "--out-dir", str(tmp_path / "hf")]) == 0  # fmt: skip
    with open(tmp_path / "hf" / "params.csv") as f:
        lrs = {r["layer"]: float(r["lr"]) for r in csv.DictReader(f)}
    assert lrs == pytest.approx({"embed": 0.002 * 0.5**3, "layers.00": 0.002 * 0.25, "layers.01": 0.001, "head": 0.002})
    assert show_lr.main(["--timm", "vit_tiny_patch16_224", "--strategy", "{lr: 1}"]) == 2  # bad input: exit 2
    assert "not valid JSON" in capsys.readouterr().err
    assert show_lr.main(["configs/default.py", "--timm", "vit_tiny_patch16_224"]) == 2
    assert "replace the config" in capsys.readouterr().err
