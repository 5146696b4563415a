# Trains a small ViT (timm vit_tiny cut to 6 blocks of width 128; 28x28 grey input in 4x4 patches; random init) on
# Fashion-MNIST from its idx files, with layer decay and warm-up + cosine. Debian ships the data:
#   apt-get install dataset-fashion-mnist      # -> /usr/share/datasets/fashion-mnist/*.gz
#   python tools/train.py configs/classification/fashion_mnist_vit.py [--cfg-options data_root=/your/idx/folder]
data_root = "/usr/share/datasets/fashion-mnist"
_classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
model = dict(type="timm", name="vit_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1, depth=6, embed_dim=128,
             num_heads=4)  # fmt: skip
task = dict(type="classification", label_smoothing=0.1)
_norm = dict(type="Normalize", mean=(0.2860,), std=(0.3530,))  # Fashion-MNIST training-set statistics
data = dict(
    train=dict(type="idx", split="train", classes=_classes, holdout=1 / 12, part="main",  # 55,000 images
               pipeline=[dict(type="HorizontalFlip", p=0.5), _norm]),
    val=dict(type="idx", split="train", classes=_classes, holdout=1 / 12, part="holdout", pipeline=[_norm]),  # 5,000
    test=dict(type="idx", split="test", classes=_classes, pipeline=[_norm]),  # 10,000
)  # fmt: skip
adapter = "auto"
strategy = dict(type="layer_decay", lr=1e-3, decay=0.8, weight_decay=0.05)
optimizer = dict(type="AdamW")
schedule = dict(type="cosine", warmup_epochs=1, min_lr_ratio=0.01)
train = dict(epochs=10, batch_size=128, seed=0, ckpt_every=1000, num_workers=2)
