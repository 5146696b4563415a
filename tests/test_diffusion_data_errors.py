"""Issue 23's diffusion data cases that ended in exit 4 ("a bug"): each is now one ``error:`` line (exit 2) or, for
a damaged cache entry found while the cache fills, a warning and the entry encoded again; and the cache fill's
progress bar (items/s), off with ``train.progress=False``."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from PIL import Image

from recipes.train.data.captioned import CaptionedImages
from recipes.train.diffusion.cache import CachedDataset, EmbeddingCache, FillProgress
from recipes.train.diffusion.weight_files import safetensors_problem
from tests.test_diffusion_data import write_photos

pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")


def tool(argv, capsys):
    """``tools/train.py`` on the shipped SD 1.5 config: (exit status, last stderr line)."""
    from tests.test_diffusion_task import ROOT
    from tools import train

    code = train.main([str(ROOT / "configs/diffusion/sd15_lora.py"), *argv])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("resolution", ["0", "-64", "(0,32)"])
def test_resolution_zero_or_negative_is_one_error_line(tmp_path, capsys, resolution):
    root = write_photos(tmp_path / "p", size=32)
    code, line = tool(["--work-dir", str(tmp_path / "wd"), "--cfg-options", f"data_root={root}",
                       f"data.train.resolution={resolution}", f"model.pretrained={tmp_path / 'none'}"], capsys)  # fmt: skip
    assert code == 2 and line.startswith("error: data.resolution must be a whole number > 0"), line


def test_safetensors_header_and_length_are_checked(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(64, 64), "b": torch.randn(3)}, str(weights))
    assert safetensors_problem(weights) is None
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert safetensors_problem(weights) == f"truncated: {len(data) // 2} of the {len(data)} bytes its header lists"
    weights.write_bytes(b"\x05")
    assert "too short" in safetensors_problem(weights)
    weights.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    assert "truncated: its header claims 1000000000 bytes, the file has 10 in all" == safetensors_problem(weights)
    weights.write_bytes((4).to_bytes(8, "little") + b"nope")
    assert "header is not safetensors JSON" in safetensors_problem(weights)


@pytest.mark.slow  # writes the SD 1.5 test pipeline: ~5-10 s on a shared 2-core CPU
def test_a_truncated_pipeline_weight_file_is_one_error_line_naming_it(tmp_path, capsys):
    from tests.test_diffusion_task import pipeline_dir

    pipe = shutil.copytree(pipeline_dir("sd15"), tmp_path / "pipe")
    weights = pipe / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    root = write_photos(tmp_path / "p", size=32)
    code, line = tool(["--work-dir", str(tmp_path / "wd"), "--cfg-options", f"data_root={root}",
                       f"model.pretrained={pipe}", "data.train.resolution=32"], capsys)  # fmt: skip
    assert code == 2 and line.startswith("error: model.pretrained: ") and "unet/diffusion_pytorch_model" in line
    assert "is damaged (truncated: its header claims" in line and "the file has 1000 in all" in line


def test_an_image_of_another_size_mid_training_is_named(tmp_path):
    root = write_photos(tmp_path / "p", size=64)
    ds = CaptionedImages(str(root), resolution=32)
    i = [f.stem for f in ds.files].index("coffee")
    assert ds[i]["pixels"].shape == (3, 32, 32)
    Image.open(root / "astronaut.jpg").save(root / "coffee.jpg")  # a square photo in its place, mid-run
    with pytest.raises(ValueError, match=r"coffee.jpg' is 64x64 now but was 64x43 when the run started"):
        ds[i]
    ds[i - 1 if i else i + 1]  # the others still read


def _cached(tmp_path):
    """A real folder and a cache holding an entry per photo (random latents: the VAE is not what is tested)."""
    ds = CaptionedImages(str(write_photos(tmp_path / "p", size=32)), resolution=32)
    cache, spec = EmbeddingCache(tmp_path / "cache", "f" * 24), {"crop": "center", "frames": "1", "stride": "1"}
    cached = CachedDataset(ds, cache, spec)
    for i in range(len(ds)):
        cache.put("latent", cached.latent_parts(i, False), {"params": torch.randn(8, 4, 4)})
        cache.put("text", {"caption": ds.captions[i]}, {"prompt_embeds": torch.randn(7, 16)})
    return ds, cache, cached


def test_a_damaged_cache_entry_is_named_in_training_and_rebuilt_at_fill(tmp_path, caplog):
    ds, cache, cached = _cached(tmp_path)
    parts = cached.latent_parts(1, False)
    path = cache._path("latent", parts)[0]
    assert torch.is_tensor(cached[1]["latent"])
    path.write_bytes(path.read_bytes()[:50])  # truncated (a full disk, a killed copy)
    with pytest.raises(ValueError, match=rf"cache: {path} is damaged \(SafetensorError: .*run again: the cache fill"):
        cached[1]
    with caplog.at_level(logging.WARNING, logger="recipes.train"):
        assert cache.get("latent", parts, rebuild=True) is None  # while the cache fills: a miss, encoded again
    assert f"[cache] {path} is damaged" in caplog.text and "encoding it again" in caplog.text
    cache.put("latent", parts, {"params": torch.zeros(8, 4, 4)})
    assert torch.equal(cached[1]["latent"], torch.zeros(8, 4, 4))


def test_fill_progress_counts_items_and_is_off_when_disabled(capsys):
    bar = FillProgress(6, enabled=True)
    for _ in range(3):
        bar.update(2)
    bar.close()
    err = capsys.readouterr().err
    assert "cache" in err and "6/6" in err and " items/s" in err
    assert bar.done == 6 and bar.rate() > 0
    quiet = FillProgress(6, enabled=False)
    quiet.update(6)
    quiet.close()
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # fills the latent cache of the SD 1.5 test pipeline twice: ~15 s on a shared 2-core CPU
def test_cache_fill_shows_progress_and_rebuilds_a_damaged_entry(tmp_path, capsys, caplog):
    from recipes.train.diffusion.cache import cache_datasets
    from recipes.train.tasks.base import build_task
    from tests.test_diffusion_task import config

    def fill(progress):
        cfg = config("sd15", **{"task.cache_dir": str(tmp_path / "cache"), "train.progress": progress,
                                "data.train.repeats": 2})  # fmt: skip
        task = build_task(cfg)
        task.cache_dir = None  # build the folder without the cache, then fill it here
        train, val = task.build_datasets()
        task.cache_dir = str(tmp_path / "cache")
        return cache_datasets(task, train, val)[0]

    cached = fill(True)
    err = capsys.readouterr().err
    assert "cache" in err and "12/12" in err and "items/s" in err  # 4 photos x 2 flips + 4 captions
    assert len(cached) == 8 and cached.cache.misses == 12  # each photo listed twice (repeats), encoded once
    path = cached.cache._path("latent", cached.latent_parts(0, False))[0]
    path.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="recipes.train"):
        again = fill(False)
    assert "items/s" not in capsys.readouterr().err  # train.progress=False: no bar
    assert f"[cache] {path} is damaged" in caplog.text and again.cache.misses == 1
    assert torch.isfinite(again[0]["latent"]).all()  # encoded anew


@pytest.mark.slow  # two short runs of the SD 1.5 test pipeline through tools/train.py: ~20 s on a shared 2-core CPU
@pytest.mark.parametrize("fault", ["image", "cache"])
def test_tools_train_stops_mid_run_with_one_error_line(tmp_path, capsys, monkeypatch, fault):
    """A photo replaced by one of another size, or a cache entry damaged, after step 1: exit 2, one line naming it."""
    from recipes.train.tasks.diffusion import DiffusionTask
    from tests.test_diffusion_task import pipeline_dir

    root = write_photos(tmp_path / "p", size=64)
    on_step = DiffusionTask.on_step

    def damage(self, model, optimizer, step):
        if step == 1 and fault == "image":
            for name in ("chelsea", "coffee", "rocket"):
                Image.open(root / "astronaut.jpg").save(root / f"{name}.jpg")
        if step == 1 and fault == "cache":
            for path in (tmp_path / "cache").rglob("*.safetensors"):
                path.write_bytes(path.read_bytes()[:40])
        on_step(self, model, optimizer, step)

    monkeypatch.setattr(DiffusionTask, "on_step", damage)
    cache = str(tmp_path / "cache") if fault == "cache" else "None"
    code, line = tool(["--work-dir", str(tmp_path / "wd"), "--cfg-options", f"data_root={root}",
                       f"model.pretrained={pipeline_dir('sd15')}", "data.train.resolution=32", "model.dtype=float32",
                       "train.max_steps=3", "train.batch_size=2", "train.grad_accum=1", "train.progress=False",
                       "train.tensorboard=False", "task.samples.prompts=[]", f"task.cache_dir={cache}",
                       "schedule.warmup_steps=0", "data.train.flip_p=0"], capsys)  # fmt: skip
    assert code == 2, line
    want = r"is 64x64 now but was 64x43 when the run started" if fault == "image" else r"is damaged \(SafetensorError"
    assert line.startswith("error: ") and __import__("re").search(want, line), line
