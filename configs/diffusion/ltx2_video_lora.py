# An LTX-2 video LoRA (rank 16) on the video stream's attention + MLP, per-component x depth LR (linear).
# Values from the per-component x depth recipe's example "LTX-2 -- Video LoRA with Stagehand".
#   python tools/train.py configs/diffusion/ltx2_video_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/videos
# Show its LR grid (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/ltx2_video_lora.py --cfg-options model.device=meta
# From the example's JSON (model_type 'ltx2'); `strategy` is its per_layer_lr block verbatim; the example's learning_rate
# (0.0003) is not set: with per_layer_lr enabled, component_lr and default_lr give every LR (lr is then an error).
_base_ = "./_base_/ltx2.py"
# the example gives only rank / alpha; the targets are the family's (attn1, attn2, ff of every block's video stream):
# an audio-stream LoRA would get no gradient from the video-only loss
policy = dict(r=16, alpha=16)
strategy = dict(
    _delete_=True,
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 0.0004, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="linear",
    min_depth_factor=0.2,
    default_lr=0.00025,
)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)  # the example gives no schedule: a common one
train = dict(max_steps=2000)
