# A full fine-tune of the Flux.2 [dev] transformer (no LoRA), per-component x depth LR (cosine).
# Values from the per-component x depth recipe's example "Flux 2 Dev -- Full Finetune".
#   python tools/train.py configs/diffusion/flux2_dev_full.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
# Everything but the example's values comes from its family base (configs/diffusion/_base_/flux2.py). Show its LR grid
# (full-size model on the meta device, no weights):
#   python tools/show_lr.py configs/diffusion/flux2_dev_full.py --cfg-options model.device=meta
# The example's learning_rate is not set: with per_layer_lr enabled, component_lr and default_lr give every LR.
_base_ = "./_base_/flux2.py"
model = dict(preset="flux2-dev")
policy = dict(_delete_=True, type="full")  # a full fine-tune: every transformer weight trains
strategy = dict(
    _delete_=True,  # the example's LRs replace the family base's
    type="component_depth",
    enabled=True,
    component_lr={"self_attn": 1.5e-05, "cross_attn": 5e-06, "ffn": 1e-05, "norm": 2e-06},
    depth_strategy="cosine",
    min_depth_factor=0.2,
    default_lr=1e-05,
)  # the example's per_layer_lr block verbatim
