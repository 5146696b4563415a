# RF-DETR Nano on the raccoon set from random weights, the same steps and recipe as rfdetr_nano_raccoon_dinov2.py
# (192 px, no multi-scale, batch 4, 160 steps): the random-init side of baseline 3 (experiments/rfdetr_raccoon).
#   python tools/train.py configs/detection/rfdetr_nano_raccoon_random.py --cfg-options data_root=rc
_base_ = ["rfdetr_nano.py"]
model = dict(resolution=192)
task = dict(multi_scale=False)
train = dict(max_steps=160, batch_size=4, grad_accum=1, num_threads=1, ckpt_every=40)
