# Search space for RF-DETR Nano on the raccoon set (configs/detection/rfdetr_nano_raccoon_dinov2.py): the decoder's
# and the DINOv2 encoder's LRs, rfdetr's ViT layer decay and component decay, the warm-up.
#   python tools/tune.py configs/detection/rfdetr_nano_raccoon_dinov2.py --space configs/tune/rfdetr_raccoon.py \
#       --trials 16 --cfg-options data_root=DATA/raccoon_coco model.pretrain_weights=WEIGHTS
metric = "mAP"
sampler = dict(type="tpe", seed=0, n_startup_trials=6)
pruner = dict(type="median", n_startup_trials=4, n_warmup_steps=1)
params = {
    "strategy.lr": dict(type="log_uniform", low=3e-5, high=1e-3),
    "strategy.lr_encoder": dict(type="log_uniform", low=1e-5, high=5e-4),
    "strategy.lr_vit_layer_decay": dict(type="uniform", low=0.5, high=1.0),
    "strategy.lr_component_decay": dict(type="uniform", low=0.3, high=1.0),
    "schedule.warmup_epochs": dict(type="int", low=0, high=2),
}
