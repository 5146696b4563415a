# DINOv2 ViT-S/14 on CIFAR-10, the PEFT comparison's hybrid deep_lora: LoRA (r 8, alpha 16; qkv, proj, fc1, fc2) in the last 4
# of 12 blocks, the LayerNorms of blocks 0-7 and the head train; lr 1e-3 (head, norms), lr_lora 5e-4; LoRA frozen
# for the first 400 steps (about 7% of the run), while norms and head warm up.
#   python tools/train.py configs/classification/dinov2_s14_cifar10_deep_lora.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained_file=/weights/dinov2_small
_base_ = ["dinov2_s14_cifar10.py"]
policy = dict(
    type="hybrid_layerwise", layout="deep_lora", lora_blocks=4, r=8, alpha=16,
    targets=["qkv", "proj", "fc1", "fc2"], freeze_lora_steps=400,
)  # fmt: skip
strategy = dict(type="flat", lr=1e-3, lr_lora=5e-4, lr_norm=1e-3, weight_decay=0.05)
