# RF-DETR Nano on the raccoon set with its encoder initialised from a DINOv2 ViT-S/14 (transformers Dinov2Model
# folder; the 14 px patch kernel resampled to Nano's 16, the 37x37 position grid to 24x24), the rest random:
# baseline 3 (experiments/rfdetr_raccoon). CPU-sized as docs/detection.md's random-init run: 192 px, no
# multi-scale, batch 4, 160 steps. Its random-init twin: rfdetr_nano_raccoon_random.py.
#   python tools/voc2coco.py csv raccoon/data/train_labels.csv --images raccoon/images --out rc/train  # and valid
#   python tools/train.py configs/detection/rfdetr_nano_raccoon_dinov2.py \
#       --cfg-options data_root=rc model.encoder_weights=/weights/dinov2_small
_base_ = ["rfdetr_nano.py"]
model = dict(resolution=192, encoder_weights=None)  # required: the DINOv2 folder
task = dict(multi_scale=False)
train = dict(max_steps=160, batch_size=4, grad_accum=1, num_threads=1, ckpt_every=40)
