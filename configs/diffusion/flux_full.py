# A full fine-tune of the Flux.1 [dev] transformer (every weight trains, no LoRA), sharded with FSDP2 over all GPUs.
#   torchrun --nproc_per_node=8 tools/train.py configs/diffusion/flux_full.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# Several machines: the same command on each with torchrun's rendezvous flags (docs/diffusion.md, "Many GPUs").
# The trained transformer lands in <work_dir>/transformer/ (FluxTransformer2DModel.from_pretrained). LR grid without weights:
#   python tools/show_lr.py configs/diffusion/flux_full.py --cfg-options model.device=meta model.pretrained=None
_base_ = "./_base_/flux.py"
# float32 weights + bf16 autocast: AdamW's moments and the updates of a 12B model stay in float32
# (12B x (4 weights + 4 grads + 8 moments) = 192 GB, 24 GB per GPU on 8 GPUs before activations)
model = dict(dtype="float32")
policy = dict(_delete_=True, type="full")  # every transformer weight trains
strategy = dict(
    _delete_=True,  # full fine-tune LRs replace the family base's LoRA ones
    type="component_depth",
    component_lr={"self_attn": 1.5e-05, "cross_attn": 5e-06, "ffn": 1e-05, "norm": 2e-06},
    depth_strategy="cosine",
    min_depth_factor=0.2,
    default_lr=1e-05,
)  # full fine-tune LRs, about 25x below the LoRA's (the same values as flux2_dev_full.py)
train = dict(fsdp=True, amp="bf16", grad_checkpointing=True, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250)
