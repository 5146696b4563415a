"""Several captioned folders in one run (``captioned_mix``): weights, own options per part, exact resume, and
regularisation images with ``prior_loss_weight`` (recipes/train/data/captioned_mix.py)."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch

from recipes.train.data.captioned_mix import CaptionedMix, _shares
from recipes.train.sampling import dataset_steps_per_epoch, make_loader
from tests.test_diffusion_data import write_photos

pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")
CATS, OTHERS = ["chelsea", "coffee"], ["astronaut", "rocket", "immunohistochemistry"]


@pytest.fixture
def folders(tmp_path):
    return str(write_photos(tmp_path / "a", names=CATS, size=64)), str(write_photos(tmp_path / "b", names=OTHERS,
                                                                                     size=64))  # fmt: skip


def mix(folders, weights=None, **kw):
    a, b = folders
    parts = [{"root": a, "resolution": 32, **kw.pop("a", {})}, {"root": b, "resolution": 32, **kw.pop("b", {})}]
    return CaptionedMix(parts, weights=weights, **kw)


def drawn(ds, epoch):
    ds.set_epoch(epoch)
    return [ds.parts[j].files[i].stem for j, i in ds._map]


def test_shares_sum_and_follow_the_weights():
    assert _shares(5, [3, 1]) == [4, 1] and _shares(5, [1, 1]) == [3, 2] and _shares(10, [1, 1, 2]) == [3, 2, 5]
    assert sum(_shares(7, [0.1, 0.2, 0.7])) == 7


def test_weights_change_what_is_drawn(folders):
    plain = mix(folders)  # no weights: the parts' sizes, every file once
    assert len(plain) == 5 and sorted(drawn(plain, 0)) == sorted(CATS + OTHERS) == sorted(drawn(plain, 3))
    heavy = mix(folders, weights=[3, 1])  # 4 of 5 places to the 2 cat photos: each twice, 1 of the 3 others
    for epoch in range(4):
        count = Counter(drawn(heavy, epoch))
        assert count["chelsea"] == count["coffee"] == 2 and sum(count[n] for n in OTHERS) == 1
    assert len({tuple(drawn(heavy, e)) for e in range(6)}) > 1  # another of the 3 others in some epoch
    captions = Counter(heavy[k]["caption"] for k in range(len(heavy)))
    assert captions["a photo of a cat"] == 2  # what the model sees, by caption


def test_draws_are_seeded_and_a_resumed_epoch_is_the_same(folders):
    ds = mix(folders, weights=[1, 4], seed=3)
    assert dataset_steps_per_epoch(ds, 2) == 2
    whole = [b["index"].tolist() for b in epochs(ds, 2)]
    captions = [b["caption"] for b in epochs(ds, 2)]
    again = mix(folders, weights=[1, 4], seed=3)  # a new process: the same draws from (seed, epoch)
    assert [b["index"].tolist() for b in epochs(again, 2)] == whole and [
        b["caption"] for b in epochs(again, 2)
    ] == captions
    assert [b["index"].tolist() for b in epochs(again, 2, start_batch=1)] == whole[1:]  # a mid-epoch resume
    assert drawn(mix(folders, weights=[1, 4], seed=4), 2) != drawn(mix(folders, weights=[1, 4], seed=3), 2)


def epochs(ds, epoch, start_batch=0):
    loader = make_loader(ds, batch_size=2, seed=0, epoch=epoch, collate=torch.utils.data.default_collate,
                         start_batch=start_batch)  # fmt: skip
    return list(loader)


def test_each_part_keeps_its_own_resolution_trigger_and_repeats(folders):
    ds = mix(folders, weights=[1, 1], a=dict(resolution=48, trigger_word="ohwx", repeats=2))
    assert [len(p) for p in ds.parts] == [4, 3] and ds.counts == [4, 3] and len(ds) == 7
    sizes = set()
    for epoch in range(3):  # one size per batch, the same number of batches each epoch
        batches = epochs(ds, epoch)
        assert len(batches) == dataset_steps_per_epoch(ds, 2) == 4  # 48 px: 4 photos, 2 batches; 32 px: 3, 2 batches
        for b in batches:
            assert len({tuple(s) for s in [b["pixels"].shape[2:]]}) == 1
            sizes.add(tuple(b["pixels"].shape[2:]))
            for cap, size in zip(b["caption"], [tuple(b["pixels"].shape[2:])] * len(b["caption"]), strict=True):
                assert cap.startswith("ohwx, ") == (size == (48, 48))  # the trigger only on part 0's photos
    assert sizes == {(48, 48), (32, 32)}


def test_setup_report_gives_each_part_size_and_share(folders, caplog):
    from recipes.train.diffusion.checks import report_data

    ds = mix(folders, weights=[3, 1])
    with caplog.at_level(logging.INFO, logger="recipes.train"):
        report_data(ds, ds)
    line = caplog.records[-1].getMessage()
    assert "train 5 images per epoch, mix of 2" in line
    assert "/a' 2 images -> 4 per epoch (80%)" in line and "/b' 3 images -> 1 per epoch (20%)" in line


def test_regularisation_part_has_its_class_prompt_and_loss_weight(folders):
    ds = mix(folders, weights=[1, 1], b=dict(class_prompt="a photo", prior_loss_weight=0.5))
    seen = {(ds[k]["caption"], ds[k]["loss_weight"]) for k in range(len(ds))}
    assert {w for c, w in seen if c == "a photo"} == {0.5} and {w for c, w in seen if c != "a photo"} == {1.0}
    assert "prior_loss_weight 0.5" in ds.describe()
    assert "loss_weight" not in mix(folders)[0]  # no regularisation part: nothing added to the batch


def test_prior_weights_scale_only_the_regularisation_samples():
    from recipes.train.data.captioned_mix import prior_weights

    snr = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(prior_weights({"caption": ["a"] * 3}, snr), snr)
    assert torch.equal(prior_weights({"loss_weight": [1.0, 0.5, 1.0]}, snr), torch.tensor([1.0, 1.0, 3.0]))


def test_validation_holds_out_of_each_part_and_refuses_a_training_folder(folders):
    from recipes.train.data.captioned import CaptionedImages, validation_set

    ds = mix(folders, a=dict(val_split=1), b=dict(val_split=1))
    val = validation_set(ds, None)
    assert len(val) == 2 and len(ds) == 3 and {val.part_of(k) for k in range(2)} == {0, 1}
    assert [val[k]["index"] for k in range(2)] == [0, 1] and val[0]["caption"] == val[0]["caption"]
    with pytest.raises(ValueError, match=r"data.val.root='.*/b' is one of data.train.datasets' folders"):
        validation_set(mix(folders), CaptionedImages(folders[1], resolution=32))


def test_drop_samples_maps_back_to_the_parts(folders):
    ds = mix(folders, weights=[1, 1])
    files = ds.image_files()
    assert [f.stem for f in files] == sorted(CATS) + sorted(OTHERS)
    ds.drop_samples([1, 2])  # coffee (part 0) and astronaut (part 1)
    assert [f.stem for p in ds.parts for f in p.files] == ["chelsea", "immunohistochemistry", "rocket"]
    assert len(ds) == 3 and "coffee" not in drawn(ds, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(weights=[1]), r"data.train.weights must be a list of 2 numbers"),
        (dict(weights=[1, 0]), r"data.train.weights\[1\] must be a number > 0, got 0"),
        (dict(weights=[1, float("nan")]), r"data.train.weights\[1\] must be a number > 0"),
        (dict(weights=[1000, 1]), r"datasets\[1\] .* gets 0 of the 5 samples per epoch at weight 1; raise its weight"),
        (dict(b=dict(type="captioned_videos")), r"data.train.datasets\[1\]: data.root=.*/b' holds no videos"),
        (dict(b=dict(type="coco")), r"datasets\[1\].type must be 'captioned_images' or 'captioned_videos'"),
        (dict(b=dict(flip=0.5)), r"data.train.datasets\[1\].flip"),
        (dict(b=dict(class_prompt="a dog")), r"datasets\[1\].class_prompt names the class .*prior_loss_weight too"),
        (dict(b=dict(prior_loss_weight=-1)), r"datasets\[1\].prior_loss_weight must be a number > 0"),
        (dict(b=dict(prior_loss_weight=1, class_prompt="x", instance_prompt="y")), r"class_prompt and .* keep one"),
        (dict(a=dict(prior_loss_weight=1), b=dict(prior_loss_weight=1)), r"every part has prior_loss_weight"),
        (dict(a=dict(buckets=True, bucket_drop_last=True, bucket_step=16)), r"bucket_drop_last differs"),
    ],
)
def test_bad_mix_options_are_named(folders, change, message):
    with pytest.raises((ValueError, KeyError, FileNotFoundError), match=message):
        mix(folders, **change)


def test_a_part_without_root_takes_data_root(folders):
    ds = CaptionedMix([dict(resolution=32), dict(root=folders[1], resolution=32)], root=folders[0])
    assert [str(p.root) for p in ds.parts] == list(folders)
    with pytest.raises(KeyError, match=r"data.train.datasets\[0\].root` is required"):
        CaptionedMix([dict(resolution=32)])
    with pytest.raises(ValueError, match=r"data.train.datasets must be a non-empty list"):
        CaptionedMix([])


def mix_config(folders, steps=4, reg_weight=None, weights=(3, 1), size_b=48, **options):
    """The shipped SD 1.5 config on a tiny pipeline with a two-folder mix (part 1 regularisation images when
    ``reg_weight`` is set)."""
    from tests.test_diffusion_task import config

    cfg = config("sd15", steps=steps, **{"task.samples.prompts": "[]", "task.min_snr_gamma": None, **options})
    reg = {} if reg_weight is None else dict(class_prompt="a photo", prior_loss_weight=reg_weight)
    cfg.data = dict(train=dict(type="captioned_mix", weights=list(weights), datasets=[
        dict(root=folders[0], resolution=32), dict(root=folders[1], resolution=size_b, **reg)]))  # fmt: skip
    return cfg


@pytest.mark.slow  # loads the SD 1.5 test pipeline three times: ~15 s on a shared 2-core CPU
def test_prior_loss_weight_scales_the_class_images_loss(folders):
    """Loss of one batch (same draws) with the class folder's weight at 0.5, 1 and 2: linear in the weight, so
    it acts on the class images' share of the loss and nothing else."""
    from recipes.train.build import build_model
    from recipes.train.config import train_options
    from recipes.train.tasks.base import build_task

    losses = {}
    for w in (0.5, 1.0, 2.0):
        cfg = mix_config(folders, reg_weight=w, weights=(1, 1), size_b=32)
        task = build_task(cfg)
        train, _ = task.build_datasets()
        model = build_model(cfg, task, train_options(cfg))
        batch = task.collate([train[0], train[len(train) - 1]])  # one photo of each part
        assert batch.get("loss_weight", [1.0, 1.0]) == [1.0, w]  # weight 1: nothing to add
        with torch.no_grad():
            losses[w] = float(task.loss(model, batch, torch.device("cpu"), torch.Generator().manual_seed(0))[0])
    assert losses[2.0] - losses[1.0] == pytest.approx(2 * (losses[1.0] - losses[0.5]), rel=1e-4)
    assert losses[2.0] > losses[1.0] > losses[0.5]


@pytest.mark.slow  # two short runs of the SD 1.5 test pipeline with the latent cache: 30 s to minutes on a loaded CPU
def test_mix_with_regularisation_trains_and_resumes_exactly(folders, tmp_path):
    """4 steps in one go == resuming the step-2 checkpoint (mid-epoch: 3 steps per epoch from two sizes), with
    the parts' latents cached and a regularisation part: the same LoRA bit for bit and the same losses."""
    from tests.test_diffusion_task import run

    opts = {"task.cache_dir": str(tmp_path / "cache"), "task.lora.r": 1, "task.lora.alpha": 1}
    straight, _ = run(mix_config(folders, reg_weight=0.5, **opts), tmp_path / "run_a")
    assert straight.steps_per_epoch == 3 and straight.train_set.counts == [4, 1]
    assert type(straight.train_set.parts[0]).__name__ == "CachedDataset"
    resumed, _ = run(mix_config(folders, reg_weight=0.5, **opts), tmp_path / "run_b",
                     resume=tmp_path / "run_a" / "checkpoints" / "step_0000002.pt")  # fmt: skip
    a = {n: p for n, p in straight.bare_model().named_parameters() if p.requires_grad}
    b = dict(resumed.bare_model().named_parameters())
    assert a and all(torch.equal(p, b[n]) for n, p in a.items())
    assert [x[1] for x in straight.history[2:]] == [x[1] for x in resumed.history]


def test_video_parts_mix_with_one_frame_count(tmp_path):
    from tests.test_diffusion_data import write_video

    roots = []
    for name in ("x", "y"):
        root = tmp_path / name
        root.mkdir()
        write_video(root / "pan.mp4")
        (root / "pan.txt").write_text(f"clip {name}")
        roots.append(str(root))
    parts = [dict(type="captioned_videos", root=r, resolution=16, num_frames=5) for r in roots]
    ds = CaptionedMix(parts, weights=[2, 1])
    assert ds.kind == "video" and ds.num_frames == 5 and ds.counts == [1, 1]  # 2 places: one each, at least one
    assert ds[0]["pixels"].shape == (3, 5, 16, 16) and {ds[k]["caption"] for k in range(2)} == {"clip x", "clip y"}
    with pytest.raises(ValueError, match=r"the video parts have num_frames \[3, 5\]"):
        CaptionedMix([parts[0], {**parts[1], "num_frames": 3}])
    with pytest.raises(ValueError, match=r"mixes \['image', 'video'\]"):
        CaptionedMix([parts[0], dict(root=str(write_photos(tmp_path / "p", size=32)), resolution=16)])
