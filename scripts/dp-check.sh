#!/usr/bin/env bash
# Data parallel on a GPU host, from a bundle made by scripts/bundle.sh:
#   bash scripts/dp-check.sh BUNDLE_DIR OUT_DIR [STEPS]
# With one GPU: the NCCL test cases only. With two or more:
#   1. all-reduce bandwidth through coil's communicator (coil bench allreduce);
#   2. mamba-130m throughput at a fixed per-GPU micro-batch, 1 vs 2 GPUs;
#   3. loss curves, 1 GPU vs 2 GPUs at the same global batch (sequential data,
#      so both see the same sequences), in OUT_DIR/curve-{1,2}/metrics.jsonl;
#   4. fault tests: a killed worker (the launcher stops the other, then
#      --resume auto continues) and a stopped worker (the survivor's NCCL
#      collective times out with an error naming it).
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0), as on our two-H200 host.
set -uo pipefail
bundle="$(cd "$1" && pwd)"
out="$(mkdir -p "$2" && cd "$2" && pwd)"
steps="${3:-60}"
cd "$bundle"
export NCCL_NVLS_ENABLE=0
ngpu=$(nvidia-smi -L | wc -l)
summary=()
tps() { # mean tokens/s of a metrics file, first logged interval left out (warm-up)
  grep '"tokens_per_s"' "$1" | tail -n +2 | sed 's/.*"tokens_per_s": \([0-9.e+]*\).*/\1/' |
    awk '{s += $1; n++} END {if (n) printf "%.0f", s / n; else print "n/a"}'
}

./coil_tests -tc='*nccl*' >"$out/nccl-tests.log" 2>&1
summary+=("nccl tests (1 GPU): rc=$?  $(grep -E '^\[doctest\] test cases' "$out/nccl-tests.log" | tr -s ' ')")
if [ "$ngpu" -lt 2 ]; then
  printf '%s\n' "only $ngpu GPU: multi-GPU checks skipped" "${summary[@]}"
  exit 0
fi

data="$out/ts.h5"
./coil prepare --text datasets/tinyshakespeare/input.txt --tokenizer bytes --out "$data" >"$out/prepare.log" 2>&1

# 1. Bandwidth (compare busbw with nccl-tests' all_reduce_perf, or with
#    torchrun --nproc-per-node 2 nccl_busbw.py (PyTorch's NCCL), for the same bytes).
./coil-run --nproc-per-node 2 -- ./coil bench allreduce 2>&1 | tee "$out/allreduce.log"
if python3 -c 'import torch' 2>/dev/null; then
  python3 -m torch.distributed.run --nproc-per-node 2 nccl_busbw.py 2>&1 | tee "$out/allreduce-torch.log"
fi

# 2. Throughput: micro-batch 16 per GPU; global 16 on one GPU, 32 on two.
common=(--config configs/mamba-130m.yaml --set "data.path=$data" --set "schedule.max_steps=$steps"
  --set log.every=10 --set eval.every=0 --set eval.batches=1 --set batch.micro_batch=16 --set log.progress=false)
./coil train "${common[@]}" --set "run_dir=$out/tp-1" --set batch.sequences_per_step=16 >"$out/tp-1.log" 2>&1
./coil-run --nproc-per-node 2 -- ./coil train "${common[@]}" --set "run_dir=$out/tp-2" \
  --set batch.sequences_per_step=32 >"$out/tp-2.log" 2>&1
t1=$(tps "$out/tp-1/metrics.jsonl")
t2=$(tps "$out/tp-2/metrics.jsonl")
summary+=("mamba-130m micro 16/GPU: 1 GPU $t1 tok/s, 2 GPUs $t2 tok/s, efficiency $(awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.3f", b / (2 * a)}')")

# 3. Loss curves at global batch 32 (1 GPU: 2 micro-batches of 16).
curve=(--config configs/tinyshakespeare.yaml --set "data.path=$data" --set data.sampling=sequential
  --set schedule.max_steps=400 --set log.every=10 --set eval.every=200 --set batch.micro_batch=16 --set log.progress=false)
./coil train "${curve[@]}" --set "run_dir=$out/curve-1" >"$out/curve-1.log" 2>&1
./coil-run --nproc-per-node 2 -- ./coil train "${curve[@]}" --set "run_dir=$out/curve-2" >"$out/curve-2.log" 2>&1
paste <(grep '"loss"' "$out/curve-1/metrics.jsonl" | sed 's/.*"step": \([0-9]*\).*"loss": \([0-9.]*\).*/\1 \2/') \
  <(grep '"loss"' "$out/curve-2/metrics.jsonl" | sed 's/.*"loss": \([0-9.]*\).*/\1/') >"$out/curves.txt"
summary+=("loss curves (step, 1 GPU, 2 GPUs) in $out/curves.txt; max |diff| $(awk '{d = $2 - $3; if (d < 0) d = -d; if (d > m) m = d} END {print m}' "$out/curves.txt")")

# 4a. Kill one worker mid-run: the launcher must stop the other and exit non-zero.
fault=(--config configs/tinyshakespeare.yaml --set "data.path=$data" --set schedule.max_steps=3000
  --set checkpoint.every=50 --set eval.every=0 --set "run_dir=$out/fault" --set log.progress=false)
./coil-run --nproc-per-node 2 -- ./coil train "${fault[@]}" >"$out/fault.log" 2>&1 &
lpid=$!
for _ in $(seq 120); do [ -e "$out/fault/checkpoints/latest" ] && break; sleep 1; done
sleep 5
victim=$(ps --ppid "$lpid" -o pid= | sed -n 2p | tr -d ' ')
t0=$(date +%s.%N)
kill -9 "$victim"
wait "$lpid"
rc=$?
t1s=$(date +%s.%N)
summary+=("kill -9 of one worker (pid $victim): launcher rc=$rc after $(awk -v a="$t0" -v b="$t1s" 'BEGIN {printf "%.1f", b - a}') s; $(grep -iE 'rank [0-9].*(signal|exit)' "$out/fault.log" | tail -1)")
./coil-run --nproc-per-node 2 -- ./coil train "${fault[@]}" --resume auto --set checkpoint.every=0 \
  >"$out/fault-resume.log" 2>&1 &
rpid=$!
sleep 40
kill -INT "$rpid" 2>/dev/null
wait "$rpid"
summary+=("resume after the kill: $(grep -E 'resumed from' "$out/fault-resume.log" | head -1 | sed 's/.*resumed/resumed/')")

# 4b. A stopped (not dead) worker: the other's collective must time out.
./coil-run --nproc-per-node 2 -- ./coil train "${fault[@]}" --set "run_dir=$out/hang" --set dist.timeout_s=20 \
  >"$out/hang.log" 2>&1 &
hpid=$!
sleep 40
hvictim=$(ps --ppid "$hpid" -o pid= | sed -n 2p | tr -d ' ')
kill -STOP "$hvictim"
wait "$hpid"
rc=$?
kill -CONT "$hvictim" 2>/dev/null
kill -9 "$hvictim" 2>/dev/null
summary+=("SIGSTOP of one worker, dist.timeout_s 20: launcher rc=$rc; $(grep -m1 'timed out' "$out/hang.log")")

echo
echo "==== data parallel summary ($ngpu GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
printf '%s\n' "${summary[@]}"
