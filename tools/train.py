"""Train a config: the task, data, model, trainable policy, param-group strategy and schedule it names.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--cfg-options key=value ...]
    torchrun --nproc_per_node=N tools/train.py CONFIG      # data-parallel (gloo on CPU, nccl on GPU)

``--resume`` alone continues the newest checkpoint of the work dir; ``--resume PATH`` a given
checkpoint (file, or a work dir). The work dir defaults to ``work_dirs/<config name>``.
Exit status: 0 done, 1 stopped on a NaN/inf loss or gradient (the last good checkpoint is kept), 2 bad
input (config, data, checkpoint, command line; one line, no traceback), 3 interrupted by Ctrl-C or
SIGTERM (a checkpoint was saved at the step boundary; ``--resume`` continues it exactly), 4 a bug.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.train.config import load_config  # noqa: E402
from recipes.train.engine import Trainer  # noqa: E402
from recipes.train.errors import cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--work-dir", default=None, help="default: work_dirs/<config name>")
    ap.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue the work dir's newest checkpoint, or the given checkpoint file / work dir",
    )
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    return ap.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(args.config).stem)
    Trainer(cfg, work_dir, resume=args.resume).setup().train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
