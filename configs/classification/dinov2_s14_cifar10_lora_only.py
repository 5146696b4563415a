# DINOv2 ViT-S/14 on CIFAR-10, LoRA-only (of the PEFT comparison): LoRA r 8 / alpha 16 on qkv, proj, fc1, fc2 of every block at
# lr 5e-4, the head at 1e-3, all else frozen; LoRA frozen for the first 400 steps (about 7% of the run).
#   python tools/train.py configs/classification/dinov2_s14_cifar10_lora_only.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained_file=/weights/dinov2_small
_base_ = ["dinov2_s14_cifar10.py"]
policy = dict(type="lora_only", r=8, alpha=16, targets=["qkv", "proj", "fc1", "fc2"], freeze_lora_steps=400)
strategy = dict(type="flat", lr=1e-3, lr_lora=5e-4, weight_decay=0.05)
