"""Bad diffusion input (issue 21's sweep): each is one ``error:`` line naming the file, row or key (exit 2), or,
for metadata rows naming no file, a count in the setup report."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from recipes.train.config import load_config
from recipes.train.config_check import check_config
from recipes.train.data.captioned import CaptionedImages
from recipes.train.tasks.base import build_task
from tests.test_diffusion_data import PHOTOS, write_photos
from tests.test_diffusion_task import ROOT, config, pipeline_dir, run


def _jsonl(root, rows):
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(root)


def _rows(**override):
    return [{"file_name": f"{n}.jpg", "text": override.get(n, c)} for n, c in PHOTOS.items()]


def test_text_null_is_an_error_naming_the_row(tmp_path):
    root = _jsonl(write_photos(tmp_path / "p", captions="jsonl", size=32), _rows(coffee=None))
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: `text` must be a string, got None for 'coffee.jpg'"):
        CaptionedImages(root, resolution=32)


def test_tools_train_prints_one_error_line_and_exits_2(tmp_path, capsys):
    from tools import train

    root = _jsonl(write_photos(tmp_path / "p", captions="jsonl", size=32), _rows(coffee=None))
    argv = ["configs/diffusion/sd15_lora.py", "--work-dir", str(tmp_path / "wd"), "--cfg-options",
            f"data_root={root}", f"model.pretrained={tmp_path / 'no_pipeline'}"]  # fmt: skip
    assert train.main([str(ROOT / argv[0]), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "metadata.jsonl:2: `text` must be a string" in err[-1]


def test_rows_for_missing_files_are_counted_in_the_setup_report(tmp_path, caplog):
    from recipes.train.diffusion.checks import report_data

    rows = [*_rows(), {"file_name": "gone.jpg", "text": "a photo"}, {"file_name": "sub/gone2.jpg", "text": "x"}]
    ds = CaptionedImages(_jsonl(write_photos(tmp_path / "p", captions="jsonl", size=32), rows), resolution=32)
    assert len(ds) == 4 and ds.unmatched_rows == 2
    with caplog.at_level(logging.INFO, logger="recipes.train"):
        report_data(ds, ds)
    assert (
        "[data] train 4 images" in caplog.text and "2 metadata.jsonl row(s) name files that are not in" in caplog.text
    )
    assert caplog.records[-1].levelno == logging.WARNING


def test_duplicate_rows_are_an_error_naming_both_lines(tmp_path):
    rows = [*_rows(), {"file_name": "chelsea.jpg", "text": "another caption"}]
    root = _jsonl(write_photos(tmp_path / "p", captions="jsonl", size=32), rows)
    with pytest.raises(ValueError, match=r"metadata.jsonl:5: 'chelsea.jpg' already has a caption at metadata.jsonl:1"):
        CaptionedImages(root, resolution=32)


def test_empty_captions_are_an_error_naming_the_file(tmp_path):
    root = write_photos(tmp_path / "p", size=32)
    (root / "rocket.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"1 empty caption\(s\) .*\['rocket.txt'\]"):
        CaptionedImages(str(root), resolution=32)
    jsonl = _jsonl(write_photos(tmp_path / "q", captions="jsonl", size=32), _rows(rocket=""))
    with pytest.raises(ValueError, match=r"empty caption\(s\) .*\['metadata.jsonl:4'\]"):
        CaptionedImages(jsonl, resolution=32)


def test_binary_caption_file_is_an_error_naming_it(tmp_path):
    root = write_photos(tmp_path / "p", size=32)
    (root / "coffee.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match=r"coffee.txt' is not UTF-8 text \(invalid start byte at byte 0"):
        CaptionedImages(str(root), resolution=32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"buckets": True, "bucket_step": 0}, r"data.bucket_step must be a whole number of pixels in \[1, resolution"),
     ({"buckets": True, "bucket_step": 64}, r"data.bucket_step .* resolution=32\] .*, got 64"),
     ({"bucket_step": 16}, r"data.bucket_step applies to aspect-ratio buckets; set data.buckets=True")],
)  # fmt: skip
def test_bad_bucket_step_is_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CaptionedImages(str(write_photos(tmp_path / "p", size=32)), resolution=32, **kwargs)


@pytest.mark.parametrize(
    ("option", "match"),
    [("policy.r=0", r"policy.r must be a whole number >= 1 \(the adapter's rank, e.g. 16\), got 0"),
     ("policy.alpha=0", r"policy.alpha must be a number > 0"),
     ("policy.dropout=1.0", r"policy.dropout must lie in \[0, 1\)"),
     ("policy.kind=lycoris", r"policy.kind must be one of \('lora', 'lokr', 'loha'\)"),
     ("policy.dora=True policy.kind=lokr", r"policy.dora=True is LoRA's DoRA; policy.kind='lokr' has no DoRA"),
     ("policy.type=norm_only", r"policy.type='norm_only' does not apply to the diffusion task"),
     ("policy.layout=deep_lora", r"policy.layout does not apply to the diffusion task"),
     ("policy.type=full", r"policy.type='full' trains every denoiser weight: \['alpha', 'r'\] would do nothing"),
     ("policy.kind=loha task.save_format=kohya", r"task.save_format='kohya' writes LoRA tensors only; "
                                                 r"policy.kind='loha' is saved with save_format='diffusers'")],
)  # fmt: skip
def test_bad_lora_numbers_are_named(option, match):
    """Checked with the config, before any data or model (the config check calls the task's check_policy)."""
    cfg = load_config(ROOT / "configs" / "diffusion" / "sd15_lora.py", option.split())
    with pytest.raises(ValueError, match=match):
        check_config(cfg)
        build_task(cfg)


def test_nan_lora_is_not_exported(tmp_path):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from recipes.train.diffusion.lora_io import check_finite

    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=8,
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2)  # fmt: skip
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"]))
    check_finite(unet)  # a healthy adapter passes
    name, p = next((n, p) for n, p in unet.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        p.fill_(float("nan"))
    with pytest.raises(ValueError, match=rf"export: the trained tensor '{name}' holds {p.numel()} NaN/inf"):
        check_finite(unet)


@pytest.mark.slow  # loads two test pipelines: ~15 s on a shared 2-core CPU
def test_preset_of_another_family_than_the_folder_is_an_error():
    """SD 1.5 and SDXL share the U-Net class: the pipeline's family tells them apart."""
    task = build_task(config("sd15", **{"model.pretrained": pipeline_dir("sdxl")}))
    with pytest.raises(ValueError, match=r"model.preset='sd15' is a sd15 model, but .* holds a sdxl pipeline"):
        task.pipeline()


@pytest.mark.slow  # trains the tiny SD 1.5 pipeline one step: ~15 s on a shared 2-core CPU
def test_export_tool_refuses_a_nan_checkpoint(tmp_path, capsys):
    from tools import export_diffusion

    run(config("sd15", steps=1, **{"task.samples.prompts": "[]"}), tmp_path / "wd")
    best = torch.load(tmp_path / "wd" / "best.pt", weights_only=True)
    name = next(n for n in best["model"] if "lora_A" in n)
    best["model"][name] = torch.full_like(best["model"][name], float("nan"))
    torch.save(best, tmp_path / "nan.pt")
    cfg = str(tmp_path / "wd" / "config.py")
    assert export_diffusion.main([cfg, str(tmp_path / "nan.pt"), "--out", str(tmp_path / "out")]) == 2
    assert f"error: export: the trained tensor '{name}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (["model.offload=True"], r"model.offload=True with train.fsdp=True"),
        (["model.base_precision=int8"], r"model.base_precision='int8' with train.fsdp=True is not supported"),
        (["model.base_precision=nf4"], r"model.base_precision='nf4' with train.fsdp=True is not supported"),
    ],
)
def test_fsdp_with_offload_or_a_quantized_base_is_one_config_error(options, match):
    """Checked with the config, before torchrun, data or weights: each option alone is valid (bf16 is not quantized)."""
    from recipes.train.config_check import check_config
    from recipes.train.errors import BadInput

    path = ROOT / "configs" / "diffusion" / "flux_full.py"  # train.fsdp=True
    with pytest.raises(BadInput, match=match):
        check_config(load_config(path, options))
    check_config(load_config(path, ["model.base_precision=bf16"]))
    check_config(load_config(path, [*options, "train.fsdp=False"]))
