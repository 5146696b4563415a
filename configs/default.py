# The README's main command trains this built-in default: a small ViT on scikit-learn's digits with layer-wise LR
# decay and warm-up + cosine (everything is in configs/classification/digits_vit.py).
#   python tools/train.py configs/default.py --work-dir work_dirs/default
_base_ = "./classification/digits_vit.py"
