#!/usr/bin/env bash
# Verify a (GPU) machine for modan-pacs pretraining in a few minutes; one line per check.
#
#   scripts/gpu_check.sh            # uses .venv/bin/python when present, else python3 (or $PYTHON)
#
# Checks, on a generated 64-image cache:
#   environment  torch / CUDA / cuDNN versions and the visible GPUs
#   switches     2-epoch pretraining with bf16 autocast, channels-last and torch.compile; environment.json
#                must report all three applied, the losses must be finite and the first epoch's within 10 % of
#                a float32 run's from the same seed
#   ddp          >= 2 GPUs: torchrun on every visible GPU (NCCL, SyncBatchNorm) must give the epoch loss of a
#                one-process run on the same global batch (relative difference < 1e-3, float32)
#                1 GPU: NCCL initialises and all-reduces under torchrun (SyncBatchNorm needs >= 2 GPUs)
#                no GPU: a 2-process gloo torchrun runs (the equality needs SyncBatchNorm, CUDA only)
#   resume       the 'switches' run resumed to a third epoch keeps its first two rows
#   profile      `modan-pacs pretrain --profile 10` with augmentation on the device prints images/s
# Exit status: 0 when every check passed (or was skipped for want of a GPU), 1 otherwise.
# Without a GPU the same checks run on the CPU (small sizes) and the script says so.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
WORK=$(mktemp -d -t modan_gpu_check.XXXXXX)
FAILED=0
export PYTHONWARNINGS=ignore

pass() { echo "PASS $1: $2"; }
skip() { echo "SKIP $1: $2"; }
fail() { echo "FAIL $1: $2 (log: $3)"; FAILED=1; }

# run NAME LOG CMD...: run a command with its output in LOG; non-zero exit = FAIL line, return 1
run() {
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1
    local status=$?
    if [ "$status" -ne 0 ]; then
        fail "$name" "exit $status from: $*" "$log"
        tail -n 5 "$log" | sed 's/^/    /'
        return 1
    fi
}

# ---- environment ---------------------------------------------------------------------------
if ! ENV_LINE=$("$PY" - 2>"$WORK/environment.log" <<'EOF'
import torch
n = torch.cuda.device_count() if torch.cuda.is_available() else 0
gpus = ", ".join(f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)" for i in range(n))
cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
print(f"{n}|torch {torch.__version__}, CUDA build {torch.version.cuda}, cuDNN {cudnn}, {n} GPU(s){': ' + gpus if gpus else ''}")
EOF
); then
    fail environment "torch does not import with $PY" "$WORK/environment.log"
    exit 1
fi
NGPU=${ENV_LINE%%|*}
pass environment "${ENV_LINE#*|}"
if [ "$NGPU" -gt 0 ]; then
    DEVICE=cuda; IMAGES=$((NGPU > 4 ? 16 * NGPU : 64)); SIZE=64; BATCH=16; STEM=paper
else
    DEVICE=cpu; IMAGES=32; SIZE=32; BATCH=8; STEM=authors
    echo "NOTE no CUDA device visible: running the checks on the CPU; NCCL and SyncBatchNorm cannot be checked here"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
CLI=("$PY" -m modan_pacs.cli.main pretrain --config configs/pretrain_tiny.yaml --data "$WORK/cache" --no-progress)
COMMON=("model.stem=$STEM" "data.size=$SIZE" "train.batch_size=$BATCH" "train.device=$DEVICE" "schedule.warmup_epochs=0" "seed=0")

# ---- a generated cache ---------------------------------------------------------------------
"$PY" - "$WORK/cache" "$IMAGES" "$SIZE" >"$WORK/cache.log" 2>&1 <<'EOF' || { fail cache "could not write the test cache" "$WORK/cache.log"; exit 1; }
import sys
import numpy as np
import pandas as pd
from modan_pacs.labels import Vocabulary
from modan_pacs.pixels import write_cache

out, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vocab = Vocabulary.load()
kinds = [("CT", "brain"), ("CT", "lung"), ("MR", "brain"), ("US", "thyroid")]
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:size, 0:size] / size
images, labels, rows = [], np.zeros((n, len(vocab.label_names)), np.float32), []
for i in range(n):
    m, a = kinds[i % 4]
    stripes = np.sin(2 * np.pi * 4 * (xx if m == "CT" else yy if m == "MR" else xx + yy))
    cx, cy = {"brain": (0.3, 0.3), "lung": (0.7, 0.4), "thyroid": (0.5, 0.75)}[a]
    img = 0.35 * stripes + np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02) + 0.15 * rng.standard_normal((size, size))
    images.append(np.clip((img + 1) / 2.5 * 255, 0, 255).astype(np.uint8))
    labels[i, vocab.label_names.index(f"modality:{m}")] = labels[i, vocab.label_names.index(f"anatomy:{a}")] = 1
    rows.append({"cache_row": i, "source": f"generated/{i}", "slice_index": 0, "modality_label": m, "anatomy_label": a})
write_cache(out, np.stack(images), labels, pd.DataFrame(rows), vocab)
EOF

# read_run RUN: "epoch:loss ..." of metrics.csv
read_run() {
    "$PY" -c 'import csv, sys; print(" ".join("%s:%s" % (r["epoch"], r["loss"]) for r in csv.DictReader(open(sys.argv[1] + "/metrics.csv"))))' "$1"
}

# ---- switches: bf16 + channels-last + compile against float32 ------------------------------
SWITCHES_OK=0
if run switches "$WORK/plain.log" "${CLI[@]}" --out "$WORK/plain" "${COMMON[@]}" train.epochs=2 train.amp=off train.channels_last=false \
    && run switches "$WORK/switches.log" "${CLI[@]}" --out "$WORK/switches" "${COMMON[@]}" train.epochs=2 \
        train.amp=bf16 train.channels_last=true train.compile=true; then
    if VERDICT=$("$PY" - "$WORK" "$DEVICE" 2>&1 <<'EOF'
import csv, json, math, sys
work, device = sys.argv[1], sys.argv[2]
env = json.load(open(f"{work}/switches/environment.json"))
applied = (env["amp_dtype"], env["channels_last"], env["compiled"], env["device"].split(":")[0])
if applied != ("bfloat16", True, True, device):
    sys.exit(f"environment.json says amp_dtype, channels_last, compiled, device = {applied}")
loss = lambda run: [float(r["loss"]) for r in csv.DictReader(open(f"{work}/{run}/metrics.csv"))]
plain, fast = loss("plain"), loss("switches")
if len(fast) != 2 or not all(math.isfinite(x) for x in fast):
    sys.exit(f"losses {fast}")
# epoch 1 starts from the same weights and views: bf16 rounding alone; later epochs follow diverging trajectories
apart = abs(plain[0] - fast[0]) / abs(plain[0])
if apart > 0.10:
    sys.exit(f"epoch-1 loss {fast[0]:.4f} vs float32 {plain[0]:.4f}: {100 * apart:.1f} % apart (> 10 %)")
print(f"bf16 + channels-last + compile on {env['device']}: loss {fast[0]:.4f}, {fast[1]:.4f} vs float32 {plain[0]:.4f}, {plain[1]:.4f} (epoch 1: {100 * apart:.2f} % apart)")
EOF
    ); then
        pass switches "$VERDICT"; SWITCHES_OK=1
    else
        fail switches "$VERDICT" "$WORK/switches.log"
    fi
fi

# ---- ddp ------------------------------------------------------------------------------------
TORCHRUN=("$PY" -m torch.distributed.run --standalone)
if [ "$NGPU" -ge 2 ]; then
    GLOBAL=$((8 * NGPU))
    DDP=("${COMMON[@]}" "train.batch_size=$GLOBAL" train.epochs=1 train.amp=off train.channels_last=false model.sync_batchnorm=true)
    # TF32 off: the two runs' different per-process batch sizes may pick different cuDNN kernels
    if run ddp "$WORK/one.log" env NVIDIA_TF32_OVERRIDE=0 "${CLI[@]}" --out "$WORK/one" "${DDP[@]}" \
        && run ddp "$WORK/ddp.log" env NVIDIA_TF32_OVERRIDE=0 "${TORCHRUN[@]}" --nproc_per_node "$NGPU" -m modan_pacs.cli.main pretrain \
            --config configs/pretrain_tiny.yaml --data "$WORK/cache" --no-progress --out "$WORK/ddp" "${DDP[@]}"; then
        if VERDICT=$("$PY" - "$WORK" "$NGPU" 2>&1 <<'EOF'
import csv, json, sys
work, n = sys.argv[1], int(sys.argv[2])
env = json.load(open(f"{work}/ddp/environment.json"))
if (env["world_size"], env["distributed_backend"], env["sync_batchnorm"]) != (n, "nccl", True):
    sys.exit(f"environment.json: world_size {env['world_size']}, backend {env['distributed_backend']}, sync_batchnorm {env['sync_batchnorm']}")
one, ddp = (float(next(csv.DictReader(open(f"{work}/{r}/metrics.csv")))["loss"]) for r in ("one", "ddp"))
rel = abs(one - ddp) / abs(one)
if rel > 1e-3:
    sys.exit(f"epoch loss {ddp:.6f} on {n} GPUs vs {one:.6f} in one process: relative difference {rel:.2e} > 1e-3")
print(f"torchrun x{n} (NCCL {env['nccl']}, SyncBatchNorm) epoch loss {ddp:.6f} = one process {one:.6f} (rel. diff. {rel:.1e})")
EOF
        ); then pass ddp "$VERDICT"; else fail ddp "$VERDICT" "$WORK/ddp.log"; fi
    fi
elif [ "$NGPU" -eq 1 ]; then
    cat >"$WORK/nccl_smoke.py" <<'EOF'
import torch, torch.distributed as dist
dist.init_process_group("nccl")
t = torch.ones(4, device="cuda")
dist.all_reduce(t)
assert torch.equal(t.cpu(), torch.ones(4) * dist.get_world_size()), t
v = torch.cuda.nccl.version()
print("nccl", ".".join(map(str, v)) if isinstance(v, tuple) else v)
dist.destroy_process_group()
EOF
    if run ddp "$WORK/nccl.log" "${TORCHRUN[@]}" --nproc_per_node 1 "$WORK/nccl_smoke.py"; then
        pass ddp "$(grep -m1 '^nccl' "$WORK/nccl.log") initialises and all-reduces under torchrun on 1 GPU"
        skip ddp-equality "1 GPU visible: SyncBatchNorm and the multi-process loss equality need >= 2 GPUs"
    fi
else
    DDP=("${COMMON[@]}" train.epochs=1 train.amp=off train.channels_last=false)
    if run ddp "$WORK/ddp.log" "${TORCHRUN[@]}" --nproc_per_node 2 -m modan_pacs.cli.main pretrain \
        --config configs/pretrain_tiny.yaml --data "$WORK/cache" --no-progress --out "$WORK/ddp" "${DDP[@]}"; then
        if VERDICT=$("$PY" -c 'import json, sys; e = json.load(open(sys.argv[1])); assert (e["world_size"], e["distributed_backend"]) == (2, "gloo"), e; print("torchrun x2 on the CPU (gloo) trained an epoch")' "$WORK/ddp/environment.json" 2>&1); then
            pass ddp "$VERDICT: $(read_run "$WORK/ddp")"
        else
            fail ddp "$VERDICT" "$WORK/ddp.log"
        fi
        skip ddp-equality "no GPU: NCCL and SyncBatchNorm (CUDA only) not checked; the gloo loss/gradient equality is tests/train/test_train_ddp.py"
    fi
fi

# ---- resume ---------------------------------------------------------------------------------
if [ "$SWITCHES_OK" -eq 1 ]; then
    BEFORE=$(read_run "$WORK/switches")
    # (no --config: a resumed run reads its own config.yaml)
    if run resume "$WORK/resume.log" "$PY" -m modan_pacs.cli.main pretrain --data "$WORK/cache" --no-progress \
        --out "$WORK/switches" --resume train.epochs=3; then
        AFTER=$(read_run "$WORK/switches")
        read -r -a ROWS <<<"$AFTER"
        if [ "${#ROWS[@]}" -eq 3 ] && [ "${ROWS[0]} ${ROWS[1]}" = "$BEFORE" ]; then
            pass resume "compiled bf16 run resumed from epoch 2 to 3: $AFTER"
        else
            fail resume "metrics before resume '$BEFORE', after '$AFTER'" "$WORK/resume.log"
        fi
    fi
else
    skip resume "needs the 'switches' run"
fi

# ---- profile --------------------------------------------------------------------------------
if run profile "$WORK/profile.log" "${CLI[@]}" --out "$WORK/profile" --profile 10 "${COMMON[@]}" \
    train.amp=bf16 train.channels_last=true data.augment_on=device; then
    LINE=$(grep -m1 '^images/s' "$WORK/profile.log")
    if [ -n "$LINE" ]; then pass profile "augmentation on the device, bf16, channels-last: $LINE"; else fail profile "no images/s line" "$WORK/profile.log"; fi
fi

if [ "$FAILED" -ne 0 ]; then
    echo "gpu_check: FAILED (logs in $WORK)"
    exit 1
fi
rm -rf "$WORK"
if [ "$NGPU" -eq 0 ]; then
    echo "gpu_check: no GPU on this machine; the CPU checks passed"
else
    echo "gpu_check: all checks passed on $NGPU GPU(s)"
fi
exit 0
