#!/usr/bin/env bash
# The GPU check of issue 28, one command:  benchmarks/gpu/check.sh OUTDIR [--device cuda|cpu] [--quick]
#
# Builds only what is missing in kernels/build (the CUDA library for sm_90 on a GPU machine, the CPU reference
# library for --device cpu; also a library that lacks an entry point bindings.py binds), then runs the stages cheapest first, each its own `python -u` process under its
# own deadline (`timeout`): a. env, b. kernels, c. layers, d. networks, e. sdk. Each writes OUTDIR/<stage>.json
# as it goes (rewritten after every case); a stage killed by its deadline or crashed is marked so and the
# next stage runs. Ends with OUTDIR/summary.md (printed too). --device cpu --quick is the dry run of
# tests/test_gpu_check.py: every stage's Python on the CPU kernel library, tiny shapes.
#
# Environment: PYTHON (default python3), STYLERT_GPU_CHECK_DEADLINE_<STAGE>=seconds overrides one stage's
# deadline, STYLERT_GPU_CHECK_STAGES="env kernels" runs only those, STYLERT_GPU_CHECK_FAIL=stage:text makes the
# cases of that stage whose names contain text raise (the tests use both).
set -u
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: $0 OUTDIR [--device cuda|cpu] [--quick]" >&2
    exit 2
fi
OUT=$1; shift
DEVICE=cuda; QUICK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --device=*) DEVICE=${1#--device=}; shift ;;
        --quick) QUICK=--quick; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "--device must be cuda or cpu" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$ROOT/sdk:$ROOT/export:$ROOT/kernels:$HERE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$OUT"
# The CPU dry run shares a small machine: one thread per library avoids oversubscription.
[ "$DEVICE" = cpu ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)

# Deadlines (seconds): they sum to 450 s, under the 8 minutes the issue allows on an H100. A dry run has
# the same deadlines: tiny shapes end far inside them.
declare -A DEADLINE=([env]=25 [kernels]=85 [layers]=100 [networks]=150 [sdk]=90)
STAGES=${STYLERT_GPU_CHECK_STAGES:-env kernels layers networks sdk}

echo "stylert GPU check: device $DEVICE${QUICK:+ (quick)}, out $OUT, python $($PYTHON -c 'import sys; print(sys.version.split()[0])')"

# Build only what is missing (carried builds are kept: no rebuild for a newer mtime after the copy), or a
# library older than bindings.py: one without an entry point it binds (e.g. the fused conv) is rebuilt.
lacks_entry_points() {  # $1 library, $2 suffix of its kernels ("" or _cpu)
    "$PYTHON" - "$1" "$2" <<'PY' 2>/dev/null
import ctypes, sys
sys.path.insert(0, "kernels")
import bindings
lib = ctypes.CDLL(sys.argv[1])
missing = [n for n in bindings.SIGNATURES if not hasattr(lib, f"stylert_{n}{sys.argv[2]}")]
print(" ".join(missing))
sys.exit(0 if missing else 1)
PY
}
if [ "$DEVICE" = cuda ]; then LIB=libstylert_kernels.so SUFFIX="" TARGET="cuda ARCHS=90" FOR=" for sm_90"
else LIB=libstylert_kernels_cpu.so SUFFIX=_cpu TARGET=cpu FOR=""; fi
if [ -f "$ROOT/kernels/build/$LIB" ] && missing=$(cd "$ROOT" && lacks_entry_points "kernels/build/$LIB" "$SUFFIX"); then
    echo "kernels/build/$LIB lacks $missing: rebuilding it"
    rm -f "$ROOT/kernels/build/$LIB"
fi
if [ ! -f "$ROOT/kernels/build/$LIB" ]; then
    echo "building kernels/build/$LIB$FOR"
    make -C "$ROOT/kernels" $TARGET 2>&1 | tail -5
fi

for stage in $STAGES; do
    var="STYLERT_GPU_CHECK_DEADLINE_${stage^^}"
    limit=${!var:-${DEADLINE[$stage]}}
    start=$(date +%s%N)
    # --kill-after: a stage that ignores SIGTERM (stuck in a CUDA call) is killed 5 s later
    STYLERT_GPU_CHECK_DEADLINE=$limit timeout --kill-after=5 "$limit" \
        "$PYTHON" -u "$HERE/stage_$stage.py" --out "$OUT" --device "$DEVICE" $QUICK
    rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    wall=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
    "$PYTHON" -u "$HERE/check_common.py" finalize "$OUT" "$stage" "$rc" "$limit" "$wall" \
        || echo "could not finalize $stage.json (exit $rc)" >&2
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "== stage $stage: TIMED OUT after ${limit}s (its finished cases are kept)"
done

"$PYTHON" -u "$HERE/check_common.py" summary "$OUT" "$(( $(date +%s) - T0 ))"
