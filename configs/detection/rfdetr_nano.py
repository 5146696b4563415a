# Fine-tunes RF-DETR Nano (rfdetr 1.11) on your COCO-format folder: data_root/train and data_root/valid,
# each with _annotations.coco.json and its images (tools/voc2coco.py converts Pascal VOC xml or a box CSV).
# The class count follows the dataset. LRs and decays are rfdetr's defaults (the `rfdetr` preset), with a
# step-level warm-up + cosine schedule.
#   python tools/train.py configs/rfdetr_ft.py --cfg-options data_root=/path/to/dataset
# Start from the published weights with model.pretrained=/path/to/rf-detr-nano.pth; without it the
# run starts from random weights (and says so). Other sizes: configs/detection/rfdetr_{nano,small,medium,large,base}.py.
data_root = None  # required: set it on the command line
model = dict(type="rfdetr", size="nano", pretrained=None)  # resolution: the size's default (384)
task = dict(
    type="detection",
    multi_scale=True,  # rfdetr's per-batch multi-scale (MultiScale.PER_BATCH) ...
    expanded_scales=True,  # ... over its expanded range, as rfdetr's TrainConfig defaults
    freeze_encoder=False,  # True: frozen for good; N: frozen for the first N optimizer steps
)
# What trains: every weight (no `policy`). policy=dict(type="encoder_lora") is rfdetr's own encoder LoRA
# (DoRA, rank 16, on the DINOv2 encoder's q/k/v; the decoder and heads train in full; needs peft).
data = dict(
    train=dict(type="coco_detection", split="train"),
    val=dict(type="coco_detection", split="valid"),
)
adapter = "rfdetr"
# rfdetr TrainConfig defaults: lr 1e-4, lr_encoder 1.5e-4, layer decay 0.8, component decay 0.7, wd 1e-4
strategy = dict(
    type="rfdetr", lr=1e-4, lr_encoder=1.5e-4, lr_vit_layer_decay=0.8, lr_component_decay=0.7, weight_decay=1e-4
)
optimizer = dict(type="AdamW")  # rfdetr trains with AdamW
schedule = dict(type="cosine", warmup_epochs=1, min_lr_ratio=0.01)  # floors relative to each group's peak
train = dict(
    epochs=50, batch_size=4, grad_accum=4, grad_clip=0.1, ema=dict(decay=0.993)
)  # rfdetr: batch 4 x 4, clip 0.1, EMA 0.993
