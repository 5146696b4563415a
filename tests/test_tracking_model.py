"""The VideoMAE tracker on real transformers classes (tiny configs): inflation, checkpoints, groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Dinov2Config, Dinov2Model, VideoMAEConfig, VideoMAEModel
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from recipes.param_groups import build_param_groups
from recipes.train.models.tracker import build_videomae_tracker

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    torch.manual_seed(0)
    dino = Dinov2Model(Dinov2Config(image_size=16, mlp_ratio=2, layerscale_value=0.5, layer_norm_eps=1e-6,
                                    **{k: v for k, v in TINY.items() if k != "intermediate_size"})).eval()  # fmt: skip
    with torch.no_grad():
        for n, p in dino.named_parameters():  # non-trivial layer scales, biases and norms
            if "lambda1" in n or n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path_factory.mktemp("dino") / "dinov2_tiny"
    dino.save_pretrained(path)
    return path, dino


def test_dinov2_inflation_is_exact(dino_dir):
    path, dino = dino_dir
    model = build_videomae_tracker(template_size=16, search_size=32, init=str(path), num_frames=2).eval()
    assert model.init_report["random"] == [] and "embeddings.cls_token" in model.init_report["unused"]
    assert model.videomae.config.hidden_size == 32 and model.videomae.config.intermediate_size == 64
    img = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        # a still image through the inflated tubelet embedding = DINOv2's patch + position embedding (no CLS)
        mine = model.embed(img, model.videomae.embeddings.template_position_embeddings)
        torch.testing.assert_close(mine, dino.embeddings(img)[:, 1:], atol=1e-5, rtol=1e-5)
        clip = img.unsqueeze(2).expand(-1, -1, 2, -1, -1)  # the same through the real Conv3d on a static clip
        conv3d = model.videomae.embeddings.patch_embeddings.projection(clip).flatten(2).transpose(1, 2)
        torch.testing.assert_close(conv3d + model.videomae.embeddings.template_position_embeddings, mine)
        h = torch.randn(2, 7, 32)
        for src, dst in zip(dino.encoder.layer, model.videomae.encoder.layer, strict=True):
            ref = src(h)
            ref = ref[0] if isinstance(ref, tuple) else ref
            torch.testing.assert_close(dst(h), ref, atol=1e-5, rtol=1e-5)  # layer scale folded, key bias dropped
    out = model(img, torch.randn(2, 3, 32, 32))
    assert out["score"].shape == (2, 1, 8, 8) and out["size"].shape == (2, 2, 8, 8)


def test_inflation_resamples_patch_and_keeps_first_blocks(dino_dir):
    path, _ = dino_dir
    model = build_videomae_tracker(template_size=16, search_size=32, init=str(path), patch_size=8,
                                   num_hidden_layers=1)  # fmt: skip
    assert model.videomae.embeddings.patch_embeddings.projection.weight.shape[-2:] == (8, 8)
    assert model.grid == (2, 4) and "encoder.layer.1.*" in model.init_report["unused"]


def test_videomae_folder_and_v2_pth(tmp_path):
    torch.manual_seed(1)
    cfg = VideoMAEConfig(image_size=32, num_frames=2, tubelet_size=2, use_mean_pooling=False, **TINY)
    src = VideoMAEModel(cfg)
    src.save_pretrained(tmp_path / "vm")
    model = build_videomae_tracker(template_size=16, search_size=32, init=str(tmp_path / "vm"), **TINY)
    for n, p in src.state_dict().items():
        torch.testing.assert_close(model.videomae.state_dict()[n], p)
    # the same weights in VideoMAEv2's own naming (blocks.i.attn.qkv + q_bias / v_bias, patch_embed, norm)
    sd = src.state_dict()
    v2 = {"patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
          "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}  # fmt: skip
    for i in range(2):
        p = f"encoder.layer.{i}."
        a = p + "attention.attention."
        v2[f"blocks.{i}.attn.qkv.weight"] = torch.cat([sd[a + k + ".weight"] for k in ("query", "key", "value")])
        v2[f"blocks.{i}.attn.q_bias"], v2[f"blocks.{i}.attn.v_bias"] = sd[a + "query.bias"], sd[a + "value.bias"]
        for mine, theirs in (("attention.output.dense", "attn.proj"), ("intermediate.dense", "mlp.fc1"),
                             ("output.dense", "mlp.fc2"), ("layernorm_before", "norm1"), ("layernorm_after", "norm2")):  # fmt: skip
            for k in ("weight", "bias"):
                v2[f"blocks.{i}.{theirs}.{k}"] = sd[f"{p}{mine}.{k}"]
    torch.save({"module": v2}, tmp_path / "v2.pth")
    model2 = build_videomae_tracker(template_size=16, search_size=32, init=str(tmp_path / "v2.pth"), **TINY)
    for n, p in sd.items():
        torch.testing.assert_close(model2.videomae.state_dict()[n], p)
    assert model2.init_report["random"] == [] and model2.init_report["unused"] == []
    # the folder's 32 px / patch 4 = the search grid: its position grid is VideoMAE's own sinusoid table, as is
    table = get_sinusoid_encoding_table(64, 32)
    torch.testing.assert_close(model.videomae.embeddings.search_position_embeddings, table, atol=1e-5, rtol=0)


def test_strict_init_reports_tensors_left_random(tmp_path):
    other = dict(TINY, hidden_size=48, num_attention_heads=2)
    VideoMAEModel(VideoMAEConfig(image_size=32, num_frames=2, use_mean_pooling=False, **other)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"backbone tensors left random, e.g. \['videomae.embeddings"):
        build_videomae_tracker(template_size=16, search_size=32, init=str(tmp_path), **TINY)
    loose = build_videomae_tracker(template_size=16, search_size=32, init=str(tmp_path), strict_init=False, **TINY)
    assert len(loose.init_report["random"]) > 10
    with pytest.raises(ValueError, match="must be multiples of the patch size 4"):
        build_videomae_tracker(template_size=18, search_size=32, **TINY)


def test_videomae_adapter_groups_the_tracker():
    model = build_videomae_tracker(template_size=16, search_size=32, **TINY)
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.1),
                                adapter="videomae")  # fmt: skip
    where = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    got = {n: (where[id(named[n])]["lr_scale"], where[id(named[n])]["weight_decay"]) for n in (
        "videomae.embeddings.template_position_embeddings", "videomae.embeddings.patch_embeddings.projection.weight",
        "videomae.encoder.layer.0.attention.attention.query.weight", "videomae.encoder.layer.1.output.dense.bias",
        "box_head.score.0.weight", "videomae.layernorm.weight")}  # fmt: skip
    assert got == {
        "videomae.embeddings.template_position_embeddings": (0.125, 0.0),  # layer 0 of L+1 = 3: 0.5**3, no decay
        "videomae.embeddings.patch_embeddings.projection.weight": (0.125, 0.1),
        "videomae.encoder.layer.0.attention.attention.query.weight": (0.25, 0.1),
        "videomae.encoder.layer.1.output.dense.bias": (0.5, 0.0),
        "box_head.score.0.weight": (1.0, 0.1),
        "videomae.layernorm.weight": (1.0, 0.0),
    }


def test_task_options_act_or_fail():
    from mmengine.config import Config

    from recipes.train.tasks.base import build_task
    from recipes.train.tasks.tracking import TrackingTask

    cfg = Config(dict(model=dict(type="videomae_tracker", template_size=16, **TINY)))
    torch.manual_seed(0)
    model = build_videomae_tracker(template_size=16, search_size=32, **TINY)
    batch = (torch.randn(2, 3, 16, 16), torch.randn(2, 3, 32, 32), torch.tensor([[0.5, 0.5, 0.3, 0.2]] * 2))
    only_focal, logs = TrackingTask(cfg, template_size=16, search_size=32,
                                    loss_weights=dict(l1=0, giou=0)).train_step(model, batch, torch.device("cpu"))  # fmt: skip
    full, _ = TrackingTask(cfg, template_size=16, search_size=32).train_step(model, batch, torch.device("cpu"))
    assert float(only_focal) == pytest.approx(logs["focal"]) and float(full) > float(only_focal)
    assert TrackingTask(cfg, template_size=16, search_size=32).build_model().grid == (4, 8)
    with pytest.raises(KeyError, match=r"loss_weights: unknown terms \['dice'\]"):
        TrackingTask(cfg, loss_weights=dict(dice=1.0))
    with pytest.raises(KeyError, match=r"`task.window` is not read by anything \(did you mean 'window_penalty'\?\)"):
        build_task(Config(dict(cfg.to_dict(), task=dict(type="tracking", window=0.3))))
    assert (
        build_task(
            Config(dict(cfg.to_dict(), task=dict(type="tracking", window_penalty=0.3)))
        ).tracker_options.window_penalty
        == 0.3
    )
    with pytest.raises(ValueError, match="model.template_size=16 contradicts task.template_size=112"):
        TrackingTask(cfg).build_model()
    with pytest.raises(ValueError, match=r"window_penalty must lie in \[0, 1\]"):
        TrackingTask(cfg, window_penalty=1.5)


def test_window_penalty_and_template_update_change_the_track():
    from recipes.train.tasks.tracking_online import OnlineTracker, TrackerOptions
    from tests.tracking_fixtures import frames_of

    torch.manual_seed(0)
    model = build_videomae_tracker(template_size=16, search_size=32, **TINY).eval()
    frames, boxes = frames_of(3)

    def run(**kw):
        t = OnlineTracker(model, TrackerOptions(template_size=16, search_size=32, **kw))
        t.init(frames[0], boxes[0])
        first = t.template.clone()
        return [t.update(f) for f in frames[1:]], torch.equal(first, t.template)

    (free, kept), (held, _) = run(window_penalty=0.0), run(window_penalty=1.0)
    assert kept and any(not (a == b).all() for a, b in zip(free, held, strict=True))
    _, kept = run(template_update_interval=1, template_update_score=0.0)
    assert not kept  # replaced after a frame whose peak reached the (zero) threshold
    _, kept = run(template_update_interval=1, template_update_score=1.1)
    assert kept
    (damped, _), (free_again, _) = run(size_lr=0.3, window_penalty=0.0), run(window_penalty=0.0)
    assert free_again[0].tolist() == free[0].tolist()
    # the first frame's size moves 30% of the way from the initial box to the prediction (unless clipped)
    grown = np.abs(damped[0][2:] - boxes[0][2:]) <= np.abs(free[0][2:] - boxes[0][2:]) * 0.3 + 1e-6
    assert grown.all() and not np.allclose(damped[0], free[0])
    for box in free + held + damped:  # every box lies inside the 64x48 frame
        assert box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= 64 + 1e-6 and box[1] + box[3] <= 48 + 1e-6


def test_dinov2_init_and_config_must_agree(dino_dir):
    path, _ = dino_dir
    with pytest.raises(ValueError, match=r"model.hidden_size=48 but the DINOv2 in .* has hidden_size=32"):
        build_videomae_tracker(template_size=16, search_size=32, init=str(path), hidden_size=48)


def test_shipped_cpu_config_rebuilds_without_init():
    """tools/track.py rebuilds a trained model from the config with init=None: the architecture must not change."""
    from pathlib import Path

    from recipes.train.config import load_config
    from recipes.train.registry import MODELS

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tracking" / "videomae_dinov2_cpu.py")
    model = MODELS.build(dict(cfg.model, template_size=cfg.task.template_size, search_size=cfg.task.search_size))
    c = model.videomae.config
    assert (c.hidden_size, c.num_attention_heads, c.intermediate_size, c.patch_size) == (384, 6, 1536, 14)
    assert model.grid == (5, 10) and len(model.videomae.encoder.layer) == 8


def test_task_reads_data_from_data_cfg_with_the_run_seed(tmp_path):
    """data_root fills each split's root, train.seed seeds the pairs, the crop geometry is the task's own."""
    from mmengine.config import Config

    from recipes.train.tasks.base import build_task
    from tests.tracking_fixtures import write_got10k

    for k, name in enumerate(("a", "v")):
        write_got10k(tmp_path, name, n=6, seed=k)

    def cfg(seed: int, **pairs) -> Config:
        return Config(dict(data_root=str(tmp_path), model=dict(type="videomae_tracker", **TINY),
                           task=dict(type="tracking", template_size=16, search_size=32),
                           data=dict(train=dict(type="tracking_pairs", exclude=["v"], samples_per_epoch=4, **pairs),
                                     val=dict(type="tracking_sequences", sequences=["v"])),
                           train=dict(seed=seed)))  # fmt: skip

    train, val = build_task(cfg(0)).build_datasets()
    assert train.seed == 0 and train.sizes == (16, 32) and [s.name for s in val.seqs] == ["v"]
    assert build_task(cfg(7)).build_datasets()[0].seed == 7
    assert not torch.equal(train[0][1], build_task(cfg(7)).build_datasets()[0][0][1])  # the seed changes the pairs
    with pytest.raises(ValueError, match="data.train.search_size=64 contradicts task.search_size=32"):
        build_task(cfg(0, search_size=64)).build_datasets()
    with pytest.raises(KeyError, match=r"`data.train.max_gapp` is not read"):
        build_task(cfg(0, max_gapp=3)).build_datasets()
    no_root = cfg(0)
    no_root.data_root = None
    with pytest.raises(KeyError, match=r"`data.train.root` is required \(set data_root"):
        build_task(no_root).build_datasets()


def test_box_loss_at_the_predicted_peak():
    """task.box_loss_at: 'target' reads the box at the ground-truth centre cell, 'peak' at the predicted score peak
    (what the tracker reads), 'both' averages them; an unknown value is an error naming the key."""
    from mmengine.config import Config

    from recipes.train.errors import BadInput
    from recipes.train.tasks.base import build_task

    def task(**kw):
        return build_task(Config(dict(model=dict(type="videomae_tracker"), task=dict(type="tracking", **kw))))

    grid = 4
    score = torch.full((1, 1, grid, grid), -5.0)
    score[0, 0, 0, 0] = 5.0  # the peak sits in the corner, the target's centre in cell (2, 2)
    size = torch.full((1, 2, grid, grid), 0.1)
    size[0, :, 2, 2] = 0.25  # the right size only at the target cell
    out = {"score": score, "size": size, "offset": torch.full((1, 2, grid, grid), 0.5)}
    box = torch.tensor([[0.625, 0.625, 0.25, 0.25]])  # centre of cell (2, 2)
    at = {k: task(box_loss_at=k).losses(out, box) for k in ("target", "peak", "both")}
    assert float(at["target"]["l1"]) == pytest.approx(0.0, abs=1e-7) and float(at["target"]["iou"]) == pytest.approx(1)
    assert float(at["peak"]["l1"]) > 0.2 and float(at["peak"]["iou"]) == 0.0  # the corner box misses the target
    assert float(at["both"]["giou"]) == pytest.approx((float(at["target"]["giou"]) + float(at["peak"]["giou"])) / 2)
    assert float(at["peak"]["focal"]) == float(at["target"]["focal"])  # the heatmap loss does not move
    with pytest.raises(BadInput, match="task.box_loss_at='centre'"):
        task(box_loss_at="centre")
