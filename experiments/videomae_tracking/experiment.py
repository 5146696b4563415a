# Baseline 4: the tracking task's CPU config on the shared set (videomae_dinov2_cpu_shared.py) from the DINOv2 init
# against random init and OpenCV's TrackerMIL: best.pt picked on 2 validation sequences (otb_DragonBaby,
# uav10_building5), the final model reported on the set's eval split (otb_David, otb_Diving, otb_Skiing,
# vot2016_bag, uav10_person11) as `test`.
#   python tools/reproduce.py videomae_tracking                    # the 3 methods, seeds 0-2 (15-22 min a trained cell)
#   python tools/reproduce.py videomae_tracking --methods dinov2_init,opencv_mil   # what docs/tracking.md reports
title = "VideoMAE tracker on the SOT sequences: DINOv2 init vs random init vs OpenCV TrackerMIL (AO, SR0.50, SR0.75)"
description = """
`configs/tracking/videomae_dinov2_cpu_shared.py` (the shipped CPU recipe: one-stream VideoMAE, the first 8 blocks of ViT-S/14 with the backbone at a tenth of the head's LR,
70 px template / 140 px search, box loss at the score peak, box size damped 0.1 between frames), trained on 8 sequences, best.pt picked on 2 validation sequences, the final
model scored on the 5 eval sequences (`test`, 1,199 frames, one pass; GOT-10k toolkit AO). `dinov2_init` inflates the real DINOv2 ViT-S/14 into the tubelet embedding;
`random_init` trains the same model from random weights with the same steps and recipe; `opencv_mil` is
OpenCV's TrackerMIL through the same readers and metrics on the validation and test splits (no training; its seeds
are repeats, and MIL is not deterministic). "best AO" is the validation AO of the epoch best.pt comes from; "test AO" the final model on the
eval split, which neither training nor the choice of best.pt saw.
"""
data = dict(tracking=dict(archive="tracking_sot.tar.gz", path="tracking_sot"),
            dinov2=dict(archive="dinov2_small.tar", path="dinov2_small"))  # fmt: skip
methods = dict(
    dinov2_init=dict(config="configs/tracking/videomae_dinov2_cpu_shared.py", options={"model.pretrained": "{dinov2}"}),
    random_init=dict(config="configs/tracking/videomae_dinov2_cpu_shared.py", options={"model.pretrained": None}),
    opencv_mil=dict(config="configs/tracking/videomae_dinov2_cpu_shared.py",
                    run="recipes.train.tasks.tracking_online:evaluate_opencv_mil"),
)  # fmt: skip
seeds = [0, 1, 2]
sizes = dict(cpu={"data_root": "{tracking}", "train.num_threads": 1})  # 1 thread: two cells side by side on 2 cores
default_size = "cpu"
columns = [("best AO", "best.AO"), ("last AO", "val.AO"), ("test AO", "test.AO"), ("test SR0.50", "test.SR0.50"),
           ("test SR0.75", "test.SR0.75"), ("test P@20", "test.precision@20"), ("wall s", "wall_s")]  # fmt: skip
curve_metric = "AO"
# the reported figure: the final model's test-split AO (GOT-10k toolkit) for seed 0; seeds 0-2 gave 0.264 +- 0.019
metric = dict(label="test AO", path="test.AO", method="dinov2_init", size="cpu", seed=0, expected=0.272, tolerance=0.06)
hardware = "2 AMD EPYC cores, no GPU, 1 thread a cell; a trained cell took 15-22 min beside another training run"
