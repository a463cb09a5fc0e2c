#!/usr/bin/env bash
# The CUDA checks in one short run, for a session lent a GPU machine (a copy of the working tree, no internet,
# PyTorch, NumPy and tqdm installed, no project virtual environment). Both steps need nothing else:
#   1. the tests marked `cuda` (solvers and traces on CUDA equal the CPU's; device="auto" picks CUDA);
#   2. bench/spade.py, whose last lines time the same batched traces on the CPU and on CUDA side by side.
# Usage there:  bash bench/device.sh            (logs under $OUT when the device tool sets it, else build/device)
# Each step has its own time limit (5 and 6 minutes); not yet timed on a GPU machine. Here, without a GPU, it runs in
# about 2.5 minutes: the cuda tests skip with their reason and the bench prints CPU numbers only.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${OUT:-build/device}
mkdir -p "$logs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

"$py" - <<'EOF' 2>&1 | tee "$logs/device.log"
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}")
EOF

echo "== tests marked cuda" | tee "$logs/cuda-tests.log"
timeout 300 "$py" -m pytest -q -p no:cacheprovider -m cuda tests/test_spade.py 2>&1 | tee -a "$logs/cuda-tests.log"
tests=${PIPESTATUS[0]}

echo "== bench/spade.py" | tee "$logs/bench-spade.log"
timeout 360 "$py" bench/spade.py --repeats 3 --obc-repeats 1 2>&1 | tee -a "$logs/bench-spade.log"
bench=${PIPESTATUS[0]}

echo "exit codes: cuda tests $tests, bench $bench" | tee -a "$logs/device.log"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
