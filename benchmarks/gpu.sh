#!/usr/bin/env bash
# One device call: the RandAugment bit-exactness check, timm/torchvision peers (torch alone on
# the GPU), then every nsjax benchmark on the accelerator JAX sees, reading the peers' figures
# from $OUT/peers.jsonl so each speedup is against the same machine in the same call. JSON and logs land under $OUT.
# Needs jax, equinox, optax, numpy (+ torch, timm for peers); nothing is installed: the checkout
# is put on PYTHONPATH.   bash benchmarks/gpu.sh [benchmark args, e.g. --only efficientnet]
# The Noisy Student step (`train_step`: nsjax.train's jitted student step, B0 224 px, 64 labeled +
# 192 unlabeled, all noise / RandAugment off / online teacher) against timm's compiled step from
# peers.py (batch 256): `PEER_SECTIONS=train,compile bash benchmarks/gpu.sh --only train_step`.
# It needs neither grain nor orbax (absent from the GPU image); the line below says so first.
# The corruption benchmark (`--only corruptions`, nsjax.robustness) needs OpenCV, which the GPU
# image lacks: carry an opencv-python-headless wheel for Python 3.12 (the device README's
# `.whl` recipe) and install it before this script; without it that benchmark alone fails.
# Where the B0 train step's time goes (per-kernel profile, fraction of the 39k img/s bandwidth
# floor): `python3 -m benchmarks.profile_step --out "$OUT/profile.json"` (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# Correctness first: RandAugment on the accelerator must equal the CPU bit for bit. A difference
# (exit 1) or no GPU/TPU (exit 2) is reported now; the timings still run (device time is scarce)
# and the script then exits with the check's status, so a failure is never swallowed.
check=0
python3 -m benchmarks.check_randaugment --require-accelerator --out "$out/randaugment_check.json" \
  2>&1 | tee "$out/randaugment_check.log" || check=$?
if [ "$check" -ne 0 ]; then
  echo "RANDAUGMENT CHECK FAILED (exit $check, see $out/randaugment_check.log); timing anyway" >&2
fi
# FixRes resampling on the accelerator against the CPU (equal up to float32 rounding ties).
python3 -m benchmarks.check_fixres --require-accelerator --out "$out/fixres_check.json" \
  2>&1 | tee "$out/fixres_check.log" || { s=$?; echo "FIXRES CHECK FAILED (exit $s)" >&2; [ "$check" -ne 0 ] || check=$s; }
python3 -c "import benchmarks.bench_train as b; e = b.engine(); print('nsjax.train step modules import; missing:', e.missing or 'nothing')" \
  || echo "nsjax.train's step modules do not import: train_step will fail (see above)" >&2
python3 -c "import cv2" 2>/dev/null \
  || echo "no OpenCV: the corruptions benchmark will fail (carry opencv-python-headless)" >&2
WHICH="${PEER_SECTIONS:-train,compile,gpu_aug}" python3 benchmarks/peers/peers.py | tee "$out/peers.jsonl"
PEERS_JSON="$out/peers.jsonl" python3 -m benchmarks --out "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
if [ "$check" -ne 0 ]; then
  echo "A CORRECTNESS CHECK FAILED (exit $check: 1 = pixels differ from the CPU, 2 = no GPU or TPU)" >&2
fi
exit "$check"
