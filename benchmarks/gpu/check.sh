#!/usr/bin/env bash
# seqlab's GPU checks on a lent machine without network: install the carried wheels and seqlab, then run check.py
# (throughput + MFU, the fairscale test, loss parity of every sharding strategy). Results land in $OUT:
# results.json, summary.txt, check.log (this script's output) and logs.tar.gz (each check's own log).
# Needs benchmarks/gpu/wheels/ (benchmarks/gpu/fetch_wheels.sh fills it); bounded to about 7.5 minutes (check.py stops at 400 s).
# Extra arguments go to check.py (e.g. --jobs 3).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/seqlab_gpu_check_out}"
PY="${PYTHON:-python3}"
WORK=/tmp/seqlab_gpu_check

install() {
    echo "== install into $($PY -c 'import sys; print(sys.prefix, sys.version.split()[0])')"
    ls benchmarks/gpu/wheels/*.whl || { echo "no wheels: run benchmarks/gpu/fetch_wheels.sh, carry the folder"; return 1; }
    $PY -m pip install -q --no-index --no-deps --no-cache-dir benchmarks/gpu/wheels/*.whl || return 1
    # Editable, as in development; without build isolation, which would need the network for setuptools.
    if ! $PY -m pip install -q --no-index --no-deps --no-build-isolation -e .; then
        # Fallback: the source folders on the path and a hand-made distribution for the plugin entry points.
        echo "editable install failed: using PYTHONPATH and a generated seqlab.dist-info"
        local info=/tmp/seqlab_site/seqlab-0.1.0.dist-info
        mkdir -p "$info"
        printf 'Metadata-Version: 2.1\nName: seqlab\nVersion: 0.1.0\n' > "$info/METADATA"
        $PY -c 'import sys, tomllib
points = tomllib.load(open("pyproject.toml", "rb"))["project"]["entry-points"]["seqlab.plugins"]
open(sys.argv[1], "w").write("[seqlab.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))' \
            "$info/entry_points.txt" || return 1
        export PYTHONPATH="$PWD/platform:$PWD/plugins:/tmp/seqlab_site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    $PY -c "import hydra, omegaconf, fairscale
from seqlab.registry import STRATEGIES, load_plugins
load_plugins()
print('fairscale', fairscale.__version__, '| strategies:', ', '.join(STRATEGIES.names()))"
}

main() {
    local start=$SECONDS rc
    install || { echo "FAIL: install"; return 2; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    echo "== install took $((SECONDS - start)) s"
    # check.py stops starting checks after its budget; the hard stop below bounds a hung one.
    timeout -k 10 430 $PY benchmarks/gpu/check.py --out "$OUT" --work "$WORK" --budget "${BUDGET:-400}" "$@"
    rc=$?
    tar -czf "$OUT/logs.tar.gz" -C "$WORK" specs 2>/dev/null || true
    echo "== check.py exit $rc, $((SECONDS - start)) s in all; summary:"
    cat "$OUT/summary.txt" 2>/dev/null
    return $rc
}

mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
main "$@" 2>&1 | tee "$OUT/check.log"
exit "${PIPESTATUS[0]}"
