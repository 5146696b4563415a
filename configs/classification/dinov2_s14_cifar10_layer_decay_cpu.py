# dinov2_s14_cifar10_layer_decay.py at the CPU size of experiments/dinov2_cifar10 (112 px, 100 training images per
# class, 4 epochs of 31 steps of 32, 200 validation and 500 test images): the config the recipe search starts from
# (docs/tuning.md, the dinov2_cifar10 baseline) and a ~4-minute run on 2 CPU cores.
#   python tools/tune.py configs/classification/dinov2_s14_cifar10_layer_decay_cpu.py --space configs/tune/dinov2_cifar10.py \
#       --trials 24 --seeds 3 --cfg-options data_root=/data/cifar10 model.pretrained=/weights/dinov2_small
_base_ = ["dinov2_s14_cifar10_layer_decay.py"]
_px = 112  # 8x8 patches of 14 px
model = dict(img_size=_px)
_train = [dict(type="Resize", height=_px, width=_px), dict(type="HorizontalFlip", p=0.5), {{_base_._norm}}]
_test = [dict(type="Resize", height=_px, width=_px), {{_base_._norm}}]
data = dict(
    train=dict(per_class=100, pipeline=_train),  # 1,000 images, class-balanced
    val=dict(per_class=20, per_class_start=100, pipeline=_test),  # 200, disjoint from the training images
    test=dict(per_class=50, pipeline=_test),  # 500
)
schedule = dict(warmup_steps=8)  # ~6 % of the 124 steps, as 350 of 5,265 at GPU size
train = dict(epochs=4, batch_size=32, num_workers=0, amp=None, num_threads=2, ckpt_every=None)
