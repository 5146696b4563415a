# Search space for DINOv2 ViT-S/14 on CIFAR-10 (configs/classification/dinov2_s14_cifar10_layer_decay.py): the base
# LR, layer decay, the new head's multiplier, the trainable policy (full / LoRA at two ranks / norm-only / deep-LoRA
# hybrid) and the warm-up. The CPU-size command (the sizes of experiments/dinov2_cifar10, 24 trials, 3 seeds):
#   python tools/tune.py configs/classification/dinov2_s14_cifar10_layer_decay.py --space configs/tune/dinov2_cifar10.py \
#       --trials 24 --seeds 3 --cfg-options data_root=DATA/cifar10 model.pretrained_file=DATA/dinov2_small ...
metric = "top1"
sampler = dict(type="tpe", seed=0, n_startup_trials=8)
pruner = dict(type="median", n_startup_trials=6, n_warmup_steps=1)
_lora = dict(type="lora_only", alpha=16, targets=["qkv", "proj", "fc1", "fc2"])
params = {
    "strategy.lr": dict(type="log_uniform", low=2e-4, high=5e-3),
    "strategy.decay": dict(type="uniform", low=0.5, high=0.95),
    "strategy.component_scale.head": dict(type="log_uniform", low=1.0, high=10.0),
    "policy": dict(
        type="choice",
        choices=dict(
            full=None,
            lora_r8=dict(_lora, r=8),
            lora_r16=dict(_lora, r=16),
            norm_only=dict(type="norm_only"),
            deep_lora=dict(
                type="hybrid_layerwise",
                layout="deep_lora",
                lora_blocks=4,
                r=8,
                alpha=16,
                targets=["qkv", "proj", "fc1", "fc2"],
            ),
        ),
    ),
    "schedule.warmup_steps": dict(type="int", low=0, high=16, step=4),
}
