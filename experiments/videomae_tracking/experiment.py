# Baseline 4: the tracking task's shipped config from the DINOv2 init against random init and OpenCV's TrackerMIL
# on the eval split (otb_David, otb_Diving, otb_Skiing, vot2016_bag, uav10_person11). Needs the tracking task and
# its configs (configs/tracking/), which another branch adds; until then every cell is 'not run'.
#   python tools/reproduce.py videomae_tracking
title = "VideoMAE tracker on the SOT sequences: DINOv2 init vs random init vs OpenCV TrackerMIL (AO, SR0.50, SR0.75)"
needs = "the tracking task (configs/tracking/) is not on this branch yet"
data = dict(tracking=dict(archive="tracking_sot.tar.gz", path="tracking_sot"),
            dinov2=dict(archive="dinov2_small.tar", path="dinov2_small"))  # fmt: skip
methods = dict(
    dinov2_init=dict(config="configs/tracking/videomae_sot.py", options={"model.encoder_weights": "{dinov2}"}),
    random_init="configs/tracking/videomae_sot.py",
    opencv_mil=dict(config="configs/tracking/opencv_mil.py"),
)
seeds = [0, 1, 2]
sizes = dict(cpu={"data_root": "{tracking}"})
default_size = "cpu"
columns = [("AO", "test.ao"), ("SR0.50", "test.sr50"), ("SR0.75", "test.sr75"), ("wall s", "wall_s")]
curve_metric = "ao"
metric = dict(label="AO", path="test.ao", method="dinov2_init", size="cpu", seed=0, expected=None, tolerance=0.03)
hardware = "not run (needs the tracking task)"
