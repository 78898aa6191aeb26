#!/usr/bin/env bash
# The GPU check (issue 6) as one short script: correctness of the fast paths on the device, then the
# seed's headline setting (2B, 768x512, 121 frames) timed against diffusers on the same weights, with and
# without the speed options. Run from the repository root; every figure goes to OUT (default gpu-check/):
#   bash benchmarks/gpu_check.sh [OUT]
# On a machine without diffusers / PyAV (e.g. the lent device machine), carry wheels made here first:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl diffusers av
# and the script installs .whl/*.whl into a scratch folder. Set QUICK=1 for a smoke run of the script itself
# (the tiny preset at 64x64x9 on whatever device torch picks; ~75 s on a 2-core CPU). STG is off in every
# run: diffusers' LTXPipeline has none, so the runs compare like with like.
set -uo pipefail
OUT=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
if compgen -G ".whl/*.whl" >/dev/null; then
    if $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/ltxv-site .whl/*.whl; then
        export PYTHONPATH="$PYTHONPATH:/tmp/ltxv-site"
    else
        echo "== installing .whl/*.whl FAILED: the runs below go on without them"
        status=1
    fi
fi
if [ "${QUICK:-0}" = 1 ]; then
    SIZE=(--preset tiny --width 64 --height 64 --frames 9 --steps 2 --stg 0 --repeats 1 --warmup 0)
else
    SIZE=(--preset 2b --width 768 --height 512 --frames 121 --steps 20 --guidance 3 --stg 0 --repeats 3 --warmup 1)
fi
step() {  # NAME COMMAND...: run, keep its output in OUT/NAME.log, remember a failure and go on
    local name=$1
    shift
    echo "== $name: $*"
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    [ $rc = 0 ] || { echo "== $name FAILED (exit $rc)"; status=1; }
}
$PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" \
    | tee "$OUT/device.txt"
[ "${QUICK:-0}" = 1 ] || step gpu_tests $PY -m pytest -q -x tests/test_fast_gpu.py
compare=()
$PY -c "import diffusers" 2>/dev/null && compare=(--compare diffusers)
step bench $PY -m ltxv bench "${SIZE[@]}" "${compare[@]}" --json "$OUT/bench.json"
step bench_compile $PY -m ltxv bench "${SIZE[@]}" --compile --json "$OUT/bench_compile.json"
step bench_compile_fp8 $PY -m ltxv bench "${SIZE[@]}" --compile --fp8 --json "$OUT/bench_compile_fp8.json"
exit $status
