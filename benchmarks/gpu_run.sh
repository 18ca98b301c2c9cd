#!/usr/bin/env bash
# One GPU lease in one command: install what is missing, run the GPU parity subset and the video benchmark row
# (tiny, bfloat16, 1 and 4 objects, transformers eager bfloat16 and float32 beside it, compile cold and warm;
# then EdgeTAM, bfloat16, beside transformers' EdgeTAM),
# write the results and print the table. Each part has its own time limit, so a slow part cannot eat the rest.
#
#   bash benchmarks/gpu_run.sh [--out DIR]   # on a GPU machine: about 10 minutes; results in DIR
#                                            # (default benchmarks/results)
#   bash benchmarks/gpu_run.sh --rehearse    # the same steps on the CPU with the small config (CI runs this)
#
# Packages missing on the machine are installed from wheels in .whl/ when that folder exists (machines without
# a registry), else from the registry. The repository is used in place (PYTHONPATH), nothing else is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=benchmarks/results
REHEARSE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rehearse) REHEARSE=1 ;;
        --out) OUT="$2"; shift ;;
        *) echo "gpu_run.sh: unknown argument $1 (expected --rehearse or --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG="$OUT/gpu-run-$(date -u +%Y-%m-%d).log"
STATUS=()

# part NAME SECONDS COMMAND...: run COMMAND under a time limit, log it, remember how it ended.
part() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    echo "=== $name (limit ${limit} s): $*" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local took=$(( $(date +%s) - start ))
    case $rc in
        0) STATUS+=("$name: ok in ${took} s") ;;
        124|137) STATUS+=("$name: stopped at its ${limit} s limit") ;;
        *) STATUS+=("$name: failed (exit $rc) after ${took} s") ;;
    esac
    echo "=== $name: exit $rc after ${took} s" | tee -a "$LOG"
}

WHEELS=/tmp/sam2-jax-wheels  # where setup installs the carried wheels; every part imports from it first
export PYTHONPATH="$WHEELS:$PYTHONPATH"

install_missing() {
    local missing
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$WHEELS" .whl/*.whl || return 1
    fi
    missing=$("$PYTHON" - <<'EOF'
import importlib.util
need = {"jax": "jax", "flax": "flax", "optax": "optax", "numpy": "numpy", "scipy": "scipy",
        "safetensors": "safetensors", "PIL": "pillow", "torch": "torch", "torchvision": "torchvision",
        "transformers": "transformers", "timm": "timm", "pytest": "pytest", "hypothesis": "hypothesis"}
print(" ".join(pip for module, pip in need.items() if importlib.util.find_spec(module) is None))
EOF
)
    if [ -n "$missing" ]; then
        echo "installing from the registry: $missing"
        "$PYTHON" -m pip install -q $missing || return 1
    fi
    "$PYTHON" -c "import jax, torch, transformers; print('jax', jax.__version__, jax.devices(), '| torch', \
torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu', '| transformers', transformers.__version__)"
}

export -f install_missing
export PYTHON WHEELS

echo "gpu_run.sh $(date -u +%FT%TZ), rehearse=$REHEARSE" | tee "$LOG"
part setup 60 bash -c install_missing

if [ $REHEARSE = 1 ]; then
    # The same test functions and benchmark as on the GPU, on the CPU with the small config.
    export SAM2_JAX_GPU_TESTS_ON=cpu JAX_PLATFORMS=cpu
    BENCH=(--config small --frames 8 --objects 1 --height 120 --width 160 --dtype bfloat16
           --reference-dtype float32)
    LIMITS=(300 600)
else
    BENCH=(--config sam2.1-hiera-tiny --frames 64 --objects 1,4 --dtype bfloat16
           --reference-dtype bfloat16,float32)
    LIMITS=(150 330)
fi
PARITY=("tests/test_gpu.py::test_image_model_matches_transformers_on_gpu[one click]"
        "tests/test_gpu.py::test_image_model_matches_transformers_on_gpu[box + click]"
        "tests/test_gpu.py::test_video_model_matches_transformers_on_gpu[two objects]"
        "tests/test_gpu.py::test_cudnn_attention_matches_xla_attention")
part parity "${LIMITS[0]}" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider -s "${PARITY[@]}"
TABLE_JSON=$(mktemp)  # the benchmark's results once more, outside OUT, for the summary below
part benchmark "${LIMITS[1]}" "$PYTHON" -m benchmarks.video "${BENCH[@]}" --out "$OUT" --json "$TABLE_JSON"
if [ $REHEARSE = 0 ]; then  # EdgeTAM, the family's fast member, beside transformers' EdgeTamVideoModel
    EDGETAM_JSON=$(mktemp)
    part edgetam 150 "$PYTHON" -m benchmarks.video --config edgetam --frames 64 --objects 1,4 --dtype bfloat16 \
        --reference-dtype bfloat16 --out "$OUT" --json "$EDGETAM_JSON"
fi

echo "=== summary" | tee -a "$LOG"
printf '%s\n' "${STATUS[@]}" | tee -a "$LOG"
for table in "$TABLE_JSON" "${EDGETAM_JSON:-}"; do
    [ -s "$table" ] && "$PYTHON" -c "import json, sys; from benchmarks.video import report; \
print(report(json.load(open(sys.argv[1]))))" "$table" | tee -a "$LOG"
done
printf '%s\n' "${STATUS[@]}" | grep -qv ": ok in" && exit 1
exit 0
