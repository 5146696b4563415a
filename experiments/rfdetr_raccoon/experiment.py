# Baseline 3: RF-DETR Nano on the raccoon set, encoder from DINOv2 vs random init, same steps and recipe.
#   python tools/reproduce.py rfdetr_raccoon        # 2 methods x 3 seeds (CPU: ~13 min a run on 2 free cores)
title = "RF-DETR Nano on raccoon: DINOv2 encoder vs random init (mAP50, mAP50:95)"
description = """
The same 160-step CPU recipe as docs/detection.md's random-init run (192 px, batch 4, no multi-scale):
`configs/detection/rfdetr_nano_raccoon_{dinov2,random}.py`. With `model.encoder_weights` the
DINOv2 ViT-S/14 folder fills RF-DETR's encoder (patch kernel 14 -> 16 px, grid 37 -> 24); decoder,
projector and heads start random in both. mAP on the 40 test images (faster-coco-eval) at the epoch that
best.pt comes from, for the trained weights and their EMA; best.pt holds whichever scored the higher mAP50:95,
the "best.pt mAP50:95" column.
"""
data = dict(raccoon=dict(archive="raccoon.tar.gz"), dinov2=dict(archive="dinov2_small.tar", path="dinov2_small"))
prepare = dict(
    raccoon_coco=dict(
        type="coco_from_csv",
        images="{raccoon}/images",
        out="raccoon_coco",
        train_csv="{raccoon}/data/train_labels.csv",
        val_csv="{raccoon}/data/test_labels.csv",
    )
)
methods = dict(
    dinov2_encoder=dict(
        config="configs/detection/rfdetr_nano_raccoon_dinov2.py", options={"model.encoder_weights": "{dinov2}"}
    ),
    random_init="configs/detection/rfdetr_nano_raccoon_random.py",
)
seeds = [0, 1, 2]
sizes = dict(cpu={"data_root": "{raccoon_coco}", "train.progress": False})
default_size = "cpu"
columns = [
    ("best.pt mAP50:95", "best_mAP"),
    ("mAP50", "best.mAP50"),
    ("mAP50:95", "best.mAP"),
    ("EMA mAP50", "best.ema_mAP50"),
    ("EMA mAP50:95", "best.ema_mAP"),
    ("wall s", "wall_s"),
]
curve_metric = "mAP50"
metric = dict(
    label="mAP50:95 of the weights best.pt holds",
    path="best_mAP",
    method="dinov2_encoder",
    size="cpu",
    seed=0,
    expected=0.142,
    tolerance=0.04,
)
hardware = "2 AMD EPYC cores, no GPU; 19-24 min a cell (seed 0 beside a tracking run)"
