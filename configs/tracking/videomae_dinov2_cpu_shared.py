# videomae_dinov2_cpu.py on the shared set (../shared/data/tracking_sot.tar.gz: 15 sequences in a plain folder):
# trains on 8 sequences, picks best.pt on 2 others (validation) and reports the 5 of the set's suggested eval
# split (test), which neither training nor the choice of best.pt sees.
#   tar xzf ../shared/data/tracking_sot.tar.gz -C /tmp && tar xf ../shared/data/dinov2_small.tar -C /tmp
#   python tools/train.py configs/tracking/videomae_dinov2_cpu_shared.py \
#       --cfg-options data_root=/tmp/tracking_sot model.init=/tmp/dinov2_small
#   python tools/track.py configs/tracking/videomae_dinov2_cpu_shared.py RUN/best.pt --eval --split test \
#       --cfg-options data_root=/tmp/tracking_sot
_base_ = "./videomae_dinov2_cpu.py"
data_root = None  # required: the folder holding one sub-folder per sequence (tracking_sot/)
_test_split = ["otb_David", "otb_Diving", "otb_Skiing", "vot2016_bag", "uav10_person11"]  # the set's eval split
_val_split = ["otb_DragonBaby", "uav10_building5"]  # one OTB, one UAV sequence out of the 10 others
data = dict(
    train=dict(split=None, exclude=_test_split + _val_split),
    val=dict(split=None, sequences=_val_split, max_sequences=None),
    test=dict(split=None, sequences=_test_split),
)
