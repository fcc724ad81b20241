#!/usr/bin/env bash
# Every open GPU target in one time-boxed command, for a session that is lent a device machine.
#
# Prepare here (the device machine cannot download; its image has jax 0.11 + CUDA, numpy, scipy, xarray, optax,
# equinox, typer, rich, matplotlib, but not zarr and friends; its python3 is 3.12):
#   .venv/bin/pip download -q --only-binary=:all: --python-version 3.12 --no-deps \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
#       -d .whl zarr numcodecs donfig google-crc32c arviz arviz-stats xarray-einstats h5netcdf platformdirs \
#       dask partd locket tomli_w   (pin the versions of .venv: pip list)
# then call the device tool's `run` with carry [".whl"] and the command
#   bash benchmarks/device_targets.sh            (part 1: Pallas force, the source derivative at 8^4)
#   PART=2 bash benchmarks/device_targets.sh     (part 2, if device time is left: 4D flow training at 8^4)
# (timeout_s 590 each).  Logs come back under $OUT; copy the figures into BENCHMARKS.md with the machine line.
# Budget: ~15 device minutes per session and 10 per command, so each item is capped (540 s in all; call run with
# timeout_s 590) and the order is by priority.  The 4D analysis at its defaults (130 s on the H200, 2026-12-04) is
# not rerun here: `run 130 analysis_su3 $PY benchmarks/analyses.py --only continuum-limit-su3 --store-dir /tmp/bench_analyses`.
set -uo pipefail
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-deps --no-index --target .devpkgs .whl/*.whl 2>&1 | tail -2
fi
# corrflow itself (metadata only matters: the analyses are found through its entry points)
$PY -m pip install -q --no-deps --no-index --no-build-isolation --target .devpkgs . 2>&1 | tail -2
export PYTHONPATH="$PWD:$PWD/.devpkgs${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import jax, corrflow; print('jax', jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/machine.txt"

run() {  # run SECONDS NAME CMD...
    local secs=$1 name=$2; shift 2
    echo "== $name (cap ${secs}s): $*" | tee -a "$OUT/summary.txt"
    timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
    echo "   exit $?" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.log"
}
# the fused Pallas force (opt-in, CORRFLOW_PALLAS=auto): compiled, checked against the XLA kernel (value, two chains,
# gradient of a flow step; each Pallas program takes Triton ~50 s to compile on the H200), then timed at 16^4 next to
# the reference and XLA kernels, with 128 (default) and 64 sites per program and with the planes in a loop (compile
# time printed: the decision between the two bodies)
if [ "${PART:-1}" = 2 ]; then
    # the smoothing flow's Gauss-Newton training at 8^4 did not finish within 110 s on the H200 (2026-12-04)
    run 300 flow_training_4d $PY benchmarks/flow_training_4d.py --L 8 --dbeta 0.05 --degrees "" --no-adam --smoothing 0.1/0.2/0.4/0.8 --linear-iters 2
    exit 0
fi
run 150 pallas_check $PY benchmarks/su3.py --check-pallas
run 250 su3_pallas $PY benchmarks/su3.py --sizes 16 --pallas --pallas-blocks 64 --pallas-loop
# issue 15: d/dlam (Feynman-Hellmann source) at 8^4 with the anisotropic held-out smoothing field (the lam default)
# (its variance reduction was measured on a CPU, 19x at 8^4; here: the cost per configuration on the GPU)
run 130 tangent_lam_8 $PY benchmarks/tangent.py --L "" --su3 --su3-L 8 --su3-beta 6.0 --su3-n 50 --su3-param lam --su3-fields anisotropic
# measured on 2026-12-04 (BENCHMARKS.md); rerun when their code changes:
#   run 110 su3_kernels $PY benchmarks/su3.py --sizes 8 16
#   run 80 hmc_throughput $PY benchmarks/hmc_throughput.py --su3-only --su3-sizes 8,16 --su3-chains 1,16 --min-time 1
#   run 110 tangent_su3_8 $PY benchmarks/tangent.py --L "" --su3 --su3-L 8 --su3-beta 6.0 --su3-n 50 --su3-fields heldout,smoothing
