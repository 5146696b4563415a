"""Renamed: ``tools/detect.py`` draws a trained detector's boxes (this name said less than it does).

python tools/detect.py CONFIG CKPT IMAGE... [--threshold 0.3] [--ema]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("error: tools/predict.py is now tools/detect.py (it draws a detector's boxes); run that with the "
          "same arguments", file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
