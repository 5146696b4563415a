# Baseline 1: the PEFT comparison (full / LoRA / norm / hybrid) on a real pretrained ViT (DINOv2 ViT-S/14) on CIFAR-10.
#   python tools/reproduce.py dinov2_cifar10               # CPU size: 6 methods x 3 seeds
#   python tools/reproduce.py dinov2_cifar10 --size gpu    # 224 px, full CIFAR-10, 15 epochs
title = "DINOv2 ViT-S/14 on CIFAR-10: linear probe, full FT (one LR / layer decay), norm-only, LoRA-only, deep_lora"
description = """
Six ways to fine-tune the same pretrained backbone (`dinov2_small.tar`, loaded into timm
`vit_small_patch14_dinov2` by `pretrained_format="hf_dinov2"`), the configs in
`configs/classification/dinov2_s14_cifar10*.py`. Top-1 / NLL on the test subset; ECE (15 bins)
before and after a temperature fitted on the validation subset (cut from the training folder,
disjoint from the training images). The CPU size fits the 18 runs in about 70 minutes on 2 CPU
cores: 112 px (8x8 patches, the size of the issue's logistic-regression probe, 66.2 % with 100 images
per class), a class-balanced 100 training images per class, 4 epochs of 31 steps of 32, 500 test images.
The GPU size is the full recipe (224 px, 45,000 training images, 15 epochs).
"""
data = dict(cifar10=dict(archive="cifar10_jpg.tar.gz"), dinov2=dict(archive="dinov2_small.tar", path="dinov2_small"))
methods = dict(
    full_one_lr="configs/classification/dinov2_s14_cifar10.py",
    full_layer_decay="configs/classification/dinov2_s14_cifar10_layer_decay.py",
    linear_probe="configs/classification/dinov2_s14_cifar10_linear_probe.py",
    norm_only="configs/classification/dinov2_s14_cifar10_norm_only.py",
    lora_only="configs/classification/dinov2_s14_cifar10_lora_only.py",
    deep_lora="configs/classification/dinov2_s14_cifar10_deep_lora.py",
)
seeds = [0, 1, 2]
_paths = {"data_root": "{cifar10}", "model.pretrained": "{dinov2}"}
_norm = dict(type="Normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
_px = 112  # 8x8 patches of 14 px: CIFAR's 32 px images upsampled; ~18 training images/s for full FT on 2 cores
sizes = dict(
    cpu={
        **_paths,
        "model.img_size": _px,
        "data.train.per_class": 100,  # 1,000 training images, class-balanced
        "data.train.pipeline": [dict(type="Resize", height=_px, width=_px), dict(type="HorizontalFlip", p=0.5), _norm],
        "data.val.per_class": 20,  # 200 validation images (temperature fitting, per-epoch curve)
        "data.val.per_class_start": 100,
        "data.val.pipeline": [dict(type="Resize", height=_px, width=_px), _norm],
        "data.test.per_class": 50,  # 500 test images
        "data.test.pipeline": [dict(type="Resize", height=_px, width=_px), _norm],
        "train.epochs": 4,
        "train.batch_size": 32,  # 31 steps per epoch (the engine drops the partial last batch), 124 in all
        "schedule.warmup_steps": 8,  # ~6% of the run, as 350 of 5,265 steps at GPU size
        "train.num_workers": 0,
        "train.amp": None,
        "train.num_threads": 2,
        "train.ckpt_every": None,
        # LoRA frozen for ~7% of the run, as 400 of 5,265 steps at GPU size
        "per_method": {m: {"policy.freeze_lora_steps": 9} for m in ("lora_only", "deep_lora")},
    },
    gpu=dict(_paths),
)
default_size = "cpu"
columns = [
    ("test top-1 %", "test.top1"),
    ("test NLL", "test.nll"),
    ("ECE", "temperature.ece_before"),
    ("ECE after T", "temperature.ece_after"),
    ("T", "temperature.T"),
    ("trainable params", "trainable_params"),
    ("train wall s", "wall_s"),
]
curve_metric = "top1"
metric = dict(
    label="test top-1 %", path="test.top1", method="linear_probe", size="cpu", seed=0, expected=62.2, tolerance=1.0
)
# The recipe search (tools/tune.py) started from this method at this size; its summary is experiments/dinov2_cifar10/tune.json:
#   python tools/reproduce.py dinov2_cifar10 --import-tune STUDY_DIR
tune = dict(method="full_layer_decay", size="cpu")
hardware = "2 AMD EPYC cores, no GPU (18 runs in 68 min; short test runs shared the cores at times)"
