"""Caption and dataset options change what the model sees, seeded by (seed, epoch, index) for an exact resume:
trigger words, tag shuffle with keep_tokens, tag dropout, repeats."""

from __future__ import annotations

import pytest

from recipes.train.data.captioned import CaptionedImages, validation_set
from tests.test_diffusion_data import PHOTOS, write_photos

TAGS = "sks cat, sitting, on a table, red hat, close up, photo"


def _folder(tmp_path, caption=TAGS):
    root = write_photos(tmp_path / "p", size=32)
    for name in PHOTOS:
        (root / f"{name}.txt").write_text(caption)
    return str(root)


def _captions(ds, epoch=0):
    ds.set_epoch(epoch)
    return [ds[i]["caption"] for i in range(len(ds))]


@pytest.mark.parametrize(
    ("caption", "trigger", "want"),
    [("a photo of a cat", "sks", "sks, a photo of a cat"),
     ("a photo of [trigger] on grass", "sks", "a photo of sks on grass"),
     ("sks, a photo of a cat", "sks", "sks, a photo of a cat"),  # already there: left alone
     ("a photo", ["sks", "ohwx style"], "sks, ohwx style, a photo")],
)  # fmt: skip
def test_trigger_word_is_put_first_or_in_place(tmp_path, caption, trigger, want):
    ds = CaptionedImages(_folder(tmp_path, caption), resolution=32, trigger_word=trigger)
    assert set(_captions(ds)) == {want}


def test_shuffle_tags_keeps_the_first_tokens_and_changes_per_epoch_not_per_rerun(tmp_path):
    root = _folder(tmp_path)
    plain = CaptionedImages(root, resolution=32)
    ds = CaptionedImages(root, resolution=32, shuffle_tags=True, keep_tokens=1, seed=3)
    again = CaptionedImages(root, resolution=32, shuffle_tags=True, keep_tokens=1, seed=3)
    assert set(_captions(plain)) == {TAGS}
    e0, e1 = _captions(ds, 0), _captions(ds, 1)
    assert e0 == _captions(again, 0) and e1 == _captions(again, 1)  # a resumed run sees the same captions
    assert e0 != e1 and len(set(e0)) > 1  # a new order per epoch and per sample
    for c in e0 + e1:
        tags = c.split(", ")
        assert tags[0] == "sks cat" and sorted(tags) == sorted(TAGS.split(", "))


def test_tag_dropout_drops_only_tags_after_the_kept_ones(tmp_path):
    ds = CaptionedImages(_folder(tmp_path), resolution=32, tag_dropout=0.5, keep_tokens=2, trigger_word="ohwx")
    seen = [c.split(", ") for e in range(4) for c in _captions(ds, e)]
    assert all(t[:2] == ["ohwx", "sks cat"] for t in seen)  # keep_tokens=2 counts the trigger word (kohya's way)
    assert min(len(t) for t in seen) < 7 and all(set(t) <= {"ohwx", *TAGS.split(", ")} for t in seen)


def test_caption_draws_leave_the_crop_and_flip_draws_alone(tmp_path):
    root = _folder(tmp_path)
    a = CaptionedImages(root, resolution=16, crop="random", flip_p=0.5, seed=1)
    b = CaptionedImages(root, resolution=16, crop="random", flip_p=0.5, seed=1, shuffle_tags=True, tag_dropout=0.3)
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        assert (sa["crop_top_left"], sa["flipped"]) == (sb["crop_top_left"], sb["flipped"])
        assert (sa["pixels"] == sb["pixels"]).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"keep_tokens": 1}, r"data.keep_tokens keeps tags from data.shuffle_tags / data.tag_dropout"),
     ({"tag_dropout": 1.0}, r"data.tag_dropout must lie in \[0, 1\), got 1.0"),
     ({"trigger_word": "sks, dog"}, r"data.trigger_word must be a word or a list of words without commas"),
     ({"keep_tokens": -1, "shuffle_tags": True}, r"data.keep_tokens must be a whole number of tags >= 0"),
     ({"repeats": 0}, r"data.repeats must be a whole number >= 1")],
)  # fmt: skip
def test_bad_caption_and_repeat_options_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CaptionedImages(_folder(tmp_path), resolution=32, **kwargs)


def test_repeats_list_each_training_file_n_times_after_the_validation_split(tmp_path):
    root = _folder(tmp_path)
    ds = CaptionedImages(root, resolution=16, repeats=3, val_split=1, flip_p=0.5, shuffle_tags=True)
    val = validation_set(ds, None)
    assert len(val) == 1 and len(ds) == 9 and val.files[0] not in ds.files
    assert sorted(set(ds.files)) == sorted(ds.files[:3]) and ds.files[:3] == ds.files[3:6]
    copies = [ds[i]["caption"] for i in (0, 3, 6)]  # one file three times: each copy draws on its own
    assert len(set(copies)) > 1
    assert set(_captions(val)) == {TAGS}  # validation captions are not shuffled
