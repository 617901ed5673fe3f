#!/usr/bin/env bash
# The GPU checks of a session that is lent a device machine, in one call (device time is short).
#
# Here, once (the machine has torch and transformers, but no ftfy, no ../shared, no internet):
#   echo /.device/ >> .git/info/exclude
#   .venv/bin/python bench/teacher_transformers_gpu.py --prepare .device/teacher
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform any -d .device/whl ftfy==6.3.1 wcwidth==0.9.4
# Then the device tool: run(command="bash bench/device_checks.sh", carry=[".device"], timeout_s=590).
# Results come back under $OUT (and bench/results/ there): copy them into bench/results/ here.
#
# Each bench gets a time limit so that one slow part cannot take the others' results with it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/device-out}"
mkdir -p "$OUT"
if compgen -G ".device/whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
status=0
timeout 120 python3 bench/student_gpu.py 2>&1 | tee "$OUT/student_gpu.log" || status=1
timeout 210 python3 bench/teacher_transformers_gpu.py --inputs .device/teacher --no-progress 2>&1 \
    | tee "$OUT/teacher_transformers_gpu.log" || status=1
timeout 210 python3 bench/teacher_transformers_gpu.py --inputs .device/teacher --no-progress --continuous-batching 2>&1 \
    | tee "$OUT/teacher_transformers_gpu_continuous.log" || status=1
cp bench/results/student_gpu.json bench/results/teacher_transformers_gpu*.json "$OUT"/ 2>/dev/null
exit $status
