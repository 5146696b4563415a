#!/usr/bin/env bash
# The one prepared GPU check (at most 10 minutes on one H100 / H200): writes ONE JSON file.
#   bash bench/gpu_check.sh [OUT.json]        (default gpu_check.json; an existing file is never overwritten)
# Needs the [dev] extras plus torchao and bitsandbytes (pip install -e '.[dev,lowp]'); downloads nothing.
#  1. the gpu-marked tests (tests/test_gpu.py: AMP, bf16, CUDA RNG resume, NCCL DDP, low-precision bases,
#     group offloading, the cache filled on the GPU), junit counts;
#  2. bench/gpu_steps.py: full-size Flux.1-dev / SDXL / WAN 2.1 1.3B LoRA steps (1024 px / 480p, batch 1,
#     gradient checkpointing, random weights from the released configs), peak memory and step time per
#     model.base_precision, each cell in its own process; a ViT-B/16 bf16 fine-tune step's MFU; the Flux.1 bf16
#     cell again with torch's default attention kernels.
# Each part runs under its own timeout; what a part printed before a timeout is kept.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.json}
if [ -e "$OUT" ]; then echo "error: $OUT exists; give another file name" >&2; exit 2; fi
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TMP=$(mktemp -d)
start=$(date +%s)
timeout 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py --junitxml "$TMP/tests.xml" >"$TMP/tests.log" 2>&1
echo $? >"$TMP/tests.rc"
# every cell without torch's cuDNN attention (it failed the Flux.1 backward on torch 2.11 / CUDA 13), then the
# Flux.1 cell with torch's default kernels once more, to see whether that failure is still there
timeout 400 "$PY" bench/gpu_steps.py --steps 2 --sdpa-backends flash efficient math >"$TMP/steps.log" 2>&1
echo $? >"$TMP/steps.rc"
timeout 60 "$PY" bench/gpu_steps.py --one flux1-dev bf16 --steps 2 >>"$TMP/steps.log" 2>&1
cp -n "$TMP/tests.log" "${OUT%.json}.tests.log" 2>/dev/null; cp -n "$TMP/steps.log" "${OUT%.json}.steps.log" 2>/dev/null
"$PY" - "$TMP" "$OUT" "$start" <<'PYEOF'
import json, sys, time, xml.etree.ElementTree as ET
from pathlib import Path

tmp, out, start = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
result = {"elapsed_s": round(time.time() - start)}
try:
    import torch, diffusers
    result |= {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "torch": torch.__version__, "diffusers": diffusers.__version__}
except Exception as e:  # the JSON is still written
    result["versions_error"] = repr(e)
tests = {"rc": int((tmp / "tests.rc").read_text())}
if (tmp / "tests.xml").is_file():
    suite = ET.parse(tmp / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests |= {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    tests["failed"] = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
tests["log_tail"] = (tmp / "tests.log").read_text()[-3000:]
result["gpu_tests"] = tests
rows = []
for line in (tmp / "steps.log").read_text().splitlines():
    if line.startswith("{"):
        rows.append(json.loads(line))
result["lora_steps"] = [r for r in rows if "base_precision" in r and r.get("model") != "vit_base_patch16_224"]
result["vit_b16"] = next((r for r in rows if r.get("model") == "vit_base_patch16_224"), None)
result["steps_rc"] = int((tmp / "steps.rc").read_text())
result["steps_log_tail"] = (tmp / "steps.log").read_text()[-3000:]
out.write_text(json.dumps(result, indent=1))
print(f"wrote {out}: tests {tests.get('tests')} (failed {tests.get('failed')}), {len(result['lora_steps'])} LoRA cells")
PYEOF
