# Fine-tunes all of a DINOv2 ViT-S/14 (timm vit_small_patch14_dinov2, weights from a transformers Dinov2Model folder)
# on CIFAR-10 at 224 px with one LR for every layer: the GPU-size baseline 1 (experiments/dinov2_cifar10). Its
# method variants inherit from it: dinov2_s14_cifar10_{layer_decay,linear_probe,norm_only,lora_only,deep_lora}.py.
# Needs CIFAR-10 as image folders (<data_root>/{train,test}/<class>/*.jpg) and the DINOv2 folder:
#   python tools/train.py configs/classification/dinov2_s14_cifar10.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained=/weights/dinov2_small
#   python tools/reproduce.py dinov2_cifar10 --size gpu      # the whole matrix, 6 methods x 3 seeds
data_root = None  # required: the folder holding train/ and test/
model = dict(
    type="timm", name="vit_small_patch14_dinov2", img_size=224,  # 16x16 patches; the 37x37 grid is resampled
    pretrained=None, pretrained_format="hf_dinov2",  # required: the Dinov2Model folder
)  # fmt: skip
task = dict(type="classification")
_norm = dict(type="Normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # DINOv2: ImageNet mean/std
_train = [dict(type="Resize", height=224, width=224), dict(type="HorizontalFlip", p=0.5), _norm]
_test = [dict(type="Resize", height=224, width=224), _norm]
data = dict(
    train=dict(type="image_folder", split="train", per_class=4500, pipeline=_train),  # 45,000 images
    val=dict(type="image_folder", split="train", per_class=500, per_class_start=4500, pipeline=_test),  # 5,000
    test=dict(type="image_folder", split="test", pipeline=_test),  # 10,000; ECE before/after temperature here
)
adapter = "auto"
strategy = dict(type="flat", lr=1e-4, weight_decay=0.05)  # one LR for backbone and new head
optimizer = dict(type="AdamW")
schedule = dict(type="cosine", warmup_steps=350, min_lr_ratio=0.01)  # warm-up ~1 epoch (351 steps)
train = dict(epochs=15, batch_size=128, num_workers=4, seed=0, ckpt_every=1000, amp="bf16")
