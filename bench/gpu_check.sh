#!/usr/bin/env bash
# Issue 13's memory rules, checked end to end on a machine with one CUDA GPU (torch there, Ray not).
#
#   usage: bench/gpu_check.sh [--dry-run] [--wheels DIR] [--keep] [--skip-bench]
#
# 1. Installs Ray from wheels carried with the repo (default ./.whl, made by
#    ../shared/tools/device-wheels; add pure-Python wheels the machine lacks, e.g. prompt_toolkit and
#    wcwidth) into a private folder on PYTHONPATH, beside the system torch; downloads nothing.
#    (A target folder rather than `venv --system-site-packages`: where python3 is itself a venv, as on
#    the device machines, a venv made from it would not see that venv's torch.)
#    MNIST: $DLNEST_MNIST_DIR, else ../shared/data/mnist, ./shared/data/mnist or ./.whl/mnist (copy the
#    shared folder there to carry it to a device machine).
# 2. Runs bench/gpu_check.py: machine facts, `pytest -m gpu`, `dlnest-ray up` with a private home, three
#    MNIST runs with default memory that must right-size and then run together, one that outgrows an
#    explicit --memory and must fail alone, `down` (then nvidia-smi lists no process of it), and the
#    checkpoint and loop-overhead benchmarks.
# Everything goes to $OUT (default ./gpu_check_out): summary.txt (PASS/FAIL/SKIP per check, then a
# RESULT line), machine.txt, steps.log, tasks.jsonl, pytest_gpu.log, bench.log, logs.tar.gz,
# install.log: at most 8 files, as a device machine hands back. Exit status 1 when a check failed.
#
# --dry-run: the same sequence on the CPU with the current environment (no install), fake GPUs
# (DLNEST_RAY_FAKE_GPUS=1x16000) and fake allocations (config key fake_gpu_mb), no `-m gpu` tests and
# no nvidia-smi check (both SKIP), a small MNIST subset and one benchmark repeat. A few minutes on 2 cores.
set -uo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }

dry=0
keep=()
extra=()
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels="$repo/.whl"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --keep) keep=(--keep) ;;
        --skip-bench) extra+=(--skip-bench) ;;
        --wheels)
            [[ $# -ge 2 ]] || { echo "gpu_check: --wheels needs a folder" >&2; exit 2; }
            wheels="$2"; shift ;;
        --wheels=*) wheels="${1#--wheels=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

out="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$out" || { echo "gpu_check: cannot create $out" >&2; exit 2; }
out="$(cd "$out" && pwd)"
cd "$repo" || exit 2

if [[ $dry -eq 1 ]]; then
    if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
    elif [[ -x "$repo/.venv/bin/python" ]]; then py="$repo/.venv/bin/python"
    else py="$(command -v python3)"; fi
    exec "$py" "$repo/bench/gpu_check.py" --out "$out" --dry-run --python "$py" \
        --install SKIP --install-note "dry run: uses $py as it is" "${keep[@]}" "${extra[@]}"
fi

# ----- install: wheels → a private site folder, the repo itself on PYTHONPATH (no build, no download)
py="${PYTHON:-$(command -v python3)}"
log="$out/install.log"
site="${GPU_CHECK_SITE:-/tmp/dlnest-gpu-check-site}"
status=PASS
note=""
{
    echo "python: $py ($("$py" --version 2>&1))"
    echo "wheels: $wheels"
    ls -l "$wheels" 2>&1
} >"$log"
shopt -s nullglob
whl=("$wheels"/*.whl)
shopt -u nullglob
if [[ ${#whl[@]} -eq 0 ]]; then
    if "$py" -c "import ray" >>"$log" 2>&1; then
        note="no wheels in $wheels; Ray is already installed"
    else
        status=FAIL
        note="no wheels in $wheels and no Ray here: run ../shared/tools/device-wheels $wheels and carry it"
    fi
else
    rm -rf "$site"
    if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --target "$site" "${whl[@]}" >>"$log" 2>&1; then
        note="${#whl[@]} wheels from $wheels into $site"
    else
        status=FAIL
        note="pip install from $wheels failed (see install.log)"
    fi
fi
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
if [[ $status == PASS ]]; then
    check='import importlib, sys
missing = []
for name in ("torch", "ray", "dlnest_ray.cli.app", "pynvml", "pyarrow", "typer", "rich", "jsonschema"):
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
import ray, torch
print("ray", ray.__version__, "from", ray.__file__, "| torch", torch.__version__)
if missing:
    print("cannot import: " + "; ".join(missing))
    sys.exit(1)'
    if ! "$py" -c "$check" >>"$log" 2>&1; then
        status=FAIL
        note="imports fail after the install: $(tail -n 1 "$log")"
    else
        note="$note; $(tail -n 1 "$log")"
    fi
fi
echo "install: $status $note" >>"$log"
exec "$py" "$repo/bench/gpu_check.py" --out "$out" --python "$py" --install "$status" \
    --install-note "$note" "${keep[@]}" "${extra[@]}"
