"""Caption options of the captioned datasets, with the peers' names where they have one.

- ``trigger_word`` (ai-toolkit's name): a word or list of words put first in every caption, or in place of
  ``[trigger]`` where a caption has it; a caption that already holds the word is left alone. Fixed per file,
  so cached text embeddings (``task.cache_dir``) include it.
- ``shuffle_tags`` (kohya ``shuffle_caption``): the comma-separated tags in a new order each epoch, the first
  ``keep_tokens`` (kohya's name; the trigger words count among them) left in place.
- ``tag_dropout`` (kohya ``caption_tag_dropout_rate``): each tag after the kept ones left out with this
  probability.

Shuffle and dropout draw from ``(seed, epoch, index)`` on a stream of their own, so a resumed run sees the
same captions and the crop / flip draws are unchanged by turning them on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRIGGER = "[trigger]"


@dataclass(frozen=True)
class CaptionOptions:
    trigger_word: tuple[str, ...] = ()
    shuffle_tags: bool = False
    keep_tokens: int = 0
    tag_dropout: float = 0.0

    @classmethod
    def build(cls, trigger_word: str | list[str] | None, shuffle_tags: bool, keep_tokens: int,
              tag_dropout: float) -> CaptionOptions:  # fmt: skip
        words = (trigger_word,) if isinstance(trigger_word, str) else tuple(trigger_word or ())
        if not all(isinstance(w, str) and w.strip() and "," not in w for w in words):
            raise ValueError(
                f"data.trigger_word must be a word or a list of words without commas, got {trigger_word!r}"
            )
        if isinstance(keep_tokens, bool) or not isinstance(keep_tokens, int) or keep_tokens < 0:
            raise ValueError(f"data.keep_tokens must be a whole number of tags >= 0, got {keep_tokens!r}")
        if isinstance(tag_dropout, bool) or not isinstance(tag_dropout, (int, float)) or not 0 <= tag_dropout < 1:
            raise ValueError(f"data.tag_dropout must lie in [0, 1), got {tag_dropout!r}")
        if keep_tokens and not (shuffle_tags or tag_dropout):
            raise ValueError("data.keep_tokens keeps tags from data.shuffle_tags / data.tag_dropout; set one of them "
                             "or remove it")  # fmt: skip
        return cls(tuple(w.strip() for w in words), bool(shuffle_tags), keep_tokens, float(tag_dropout))

    @property
    def varies(self) -> bool:
        """Whether a file's caption changes from epoch to epoch (then text embeddings cannot be cached)."""
        return self.shuffle_tags or self.tag_dropout > 0

    def with_trigger(self, caption: str) -> str:
        if not self.trigger_word:
            return caption
        words = ", ".join(self.trigger_word)
        if TRIGGER in caption:
            return caption.replace(TRIGGER, words)
        missing = [w for w in self.trigger_word if w not in caption]
        return ", ".join([*missing, caption]) if missing else caption

    def augment(self, caption: str, seed: int, epoch: int, index: int) -> str:
        """This epoch's caption of sample ``index``: tags shuffled and dropped after the kept ones."""
        if not self.varies:
            return caption
        tags = [t.strip() for t in caption.split(",") if t.strip()]
        keep = max(self.keep_tokens, len(self.trigger_word))
        head, rest = tags[:keep], tags[keep:]
        rng = np.random.default_rng([seed, epoch, index, 1])  # stream 1: the crop / flip draws use the 3-part seed
        if self.tag_dropout:
            rest = [t for t, u in zip(rest, rng.random(len(rest)), strict=True) if u >= self.tag_dropout]
        if self.shuffle_tags:
            rest = [rest[i] for i in rng.permutation(len(rest))]
        return ", ".join(head + rest)


def read_text(path: Path) -> str:
    """A caption file's text; anything but UTF-8 is an error naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"data: {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 "
                         "or remove it") from None  # fmt: skip
