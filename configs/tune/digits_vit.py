# Search space for configs/default.py (digits ViT): layer decay, base LR, the head's LR multiplier, warm-up.
#   python tools/tune.py configs/default.py --space configs/tune/digits_vit.py --trials 12 \
#       --cfg-options train.epochs=6
metric = "top1"
sampler = dict(type="tpe", seed=0, n_startup_trials=4)
pruner = dict(type="median", n_startup_trials=3, n_warmup_steps=1)
params = {
    "strategy.lr": dict(type="log_uniform", low=3e-4, high=3e-3),
    "strategy.decay": dict(type="uniform", low=0.5, high=1.0),
    "strategy.component_scale.head": dict(type="log_uniform", low=1.0, high=10.0),
    "schedule.warmup_epochs": dict(type="int", low=0, high=3),
}
