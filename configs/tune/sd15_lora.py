# Search space for an SD 1.5 LoRA (configs/diffusion/sd15_lora.py): the per-component LRs, the depth profile and
# its floor, the warm-up; scored by the validation loss (lower is better), the task's primary metric.
#   python tools/tune.py configs/diffusion/sd15_lora.py --space configs/tune/sd15_lora.py --trials 12 \
#       --cfg-options model.pretrained=PIPELINE data_root=IMAGES train.max_steps=400
sampler = dict(type="tpe", seed=0, n_startup_trials=4)
pruner = dict(type="median", n_startup_trials=3, n_warmup_steps=1)
params = {
    "strategy.default_lr": dict(type="log_uniform", low=2e-5, high=5e-4),
    "strategy.component_lr.self_attn": dict(type="log_uniform", low=2e-5, high=5e-4),
    "strategy.component_lr.cross_attn": dict(type="log_uniform", low=1e-5, high=3e-4),
    "strategy.depth_strategy": dict(type="choice", choices=["linear", "cosine", "inverted_u", "flat"]),
    "strategy.min_depth_factor": dict(type="uniform", low=0.1, high=1.0),
    "schedule.warmup_steps": dict(type="int", low=0, high=100, step=25),
}
