# Search space for the tracker (configs/tracking/videomae_dinov2_cpu.py): the backbone's LR, its depth decay, the
# head's multiplier over the backbone (OSTrack's is 10) and the warm-up.
#   python tools/tune.py configs/tracking/videomae_dinov2_cpu.py --space configs/tune/videomae_tracking.py \
#       --trials 12 --cfg-options data_root=DATA/tracking_sot model.init=DATA/dinov2_small
metric = "AO"
sampler = dict(type="tpe", seed=0, n_startup_trials=4)
pruner = dict(type="median", n_startup_trials=3, n_warmup_steps=2)
params = {
    "strategy.lr": dict(type="log_uniform", low=1e-5, high=2e-4),
    "strategy.decay": dict(type="uniform", low=0.6, high=1.0),
    "strategy.component_scale.head": dict(type="log_uniform", low=1.0, high=30.0),
    "schedule.warmup_steps": dict(type="int", low=0, high=64, step=16),
}
