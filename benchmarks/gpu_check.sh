#!/usr/bin/env bash
# One short GPU check for a machine with CUDA (about 5 minutes on an H100): the GPU tests, then
# the scale benchmark at 10^6 cells in fp32 and bf16. Run from the repository root:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# It needs scnapse installed (pip install torch && pip install -e ".[test]").
set -uo pipefail
out=${1:-gpu-results}
mkdir -p "$out"
python -c "import torch; print('device:', torch.cuda.get_device_name(0))" | tee "$out/device.txt"
python -m pytest -q -m gpu tests 2>&1 | tee "$out/gpu_tests.txt"
for precision in fp32 bf16; do
  python benchmarks/scale.py 1000000 --device cuda --precision "$precision" --json "$out/scale.jsonl" \
    2>&1 | tee -a "$out/scale.txt"
done
