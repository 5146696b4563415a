# The PEFT comparison's winner: hybrid_layerwise / deep_lora on ViT-S/16, CIFAR-100. LoRA (r 8, alpha 16; qkv, proj, fc1, fc2)
# in the last 4 of 12 blocks, the LayerNorms of blocks 0-7 and the head train (247,396 trainable, as the comparison's
# table). lr 1e-3 (head), lr_norm 1e-3, lr_lora 5e-4; LoRA frozen for the first 400 steps (norms and head warm up).
#   python tools/train.py configs/classification/vit_s16_cifar100_deep_lora.py \
#       --cfg-options data_root=/data model.pretrained_file=/weights/vit_small_patch16_224.safetensors
_base_ = ["vit_s16_cifar100_full.py"]
policy = dict(
    type="hybrid_layerwise", layout="deep_lora",
    lora_blocks=4,  # round(12 / 3): the deeper third
    r=8, alpha=16, targets=["qkv", "proj", "fc1", "fc2"],
    freeze_lora_steps=400,  # as the comparison: the first ~400 mini-batches train norms and head only
)  # fmt: skip
strategy = dict(type="flat", lr=1e-3, lr_lora=5e-4, lr_norm=1e-3, weight_decay=0.05)
