#!/usr/bin/env bash
# The README's CUDA figures and its long experiments in one go, on a machine with a GPU:
#   1. pretrains the models the transfer experiments need;
#   2. alone on the machine: a 200-episode DDPG search (configs/amc-ddpg.toml) on cuda and 20
#      episodes of it on the CPU (seconds per episode), and `cargo bench --bench gnn` on cuda
#      (encoder forward, and the graph agent's training step on cpu and cuda);
#   3. side by side, one thread each: scripts/search_table.sh for configs/amc-ddpg-resnet20.toml,
#      DDPG from scratch on the three transfer envs, and scripts/transfer_table.sh, seeds 0 1 2;
#   4. the tables, into runs/cuda (log.txt holds every figure), with the runs packed in
#      runs/cuda/runs.tar.gz.
#   GNN_BENCH=target/release/deps/gnn-<hash> scripts/cuda_run.sh     (cargo bench --no-run builds it)
# The bench draws a PNG: on a machine without DejaVu fonts, point AUTOPRUNE_FONT at a .ttf.
# Step 3 stops at BUDGET seconds (default 480) after the start, so the whole fits a 10-minute
# slot; unfinished runs can be continued with the same command. SMOKE=1 runs every step with a
# handful of episodes on whatever device there is.
set -uo pipefail
cd "$(dirname "$0")/.."
out=runs/cuda
mkdir -p "$out" runs
export BIN=${BIN:-./target/release/autoprune}
seeds="0 1 2"
if [ -n "${SMOKE:-}" ]; then
    export EPISODES=6 TRAIN_EPISODES=6
    timing=(--episodes 4) cpu_timing=(--episodes 2) adapt=3 gpu=auto epochs=(--epochs 1)
else
    timing=(--episodes 200) cpu_timing=(--episodes 20) adapt=40 gpu=cuda epochs=()
fi
log() { echo "[$(date +%T)] $*" | tee -a "$out/log.txt"; }
log "start: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo no GPU)"
for e in fmnist-vgg7 fmnist-mobilenetv2; do
    [ -f "checkpoints/$e.safetensors" ] \
        || "$BIN" pretrain --env "envs/$e.toml" --device "$gpu" "${epochs[@]}" --json > "$out/pretrain-$e.json" 2> "$out/pretrain-$e.err" &
done
wait
log "pretrained: $(cat "$out"/pretrain-*.json 2>/dev/null | tr '\n' ' ')"
"$BIN" search --config configs/amc-ddpg.toml "${timing[@]}" --device "$gpu" \
    --logdir runs/timing-cuda --json > "$out/timing-cuda.json" 2> "$out/timing-cuda.err"
log "ddpg on $gpu: $(cat "$out/timing-cuda.json")"
"$BIN" search --config configs/amc-ddpg.toml "${cpu_timing[@]}" --device cpu \
    --logdir runs/timing-cpu --json > "$out/timing-cpu.json" 2> "$out/timing-cpu.err"
log "ddpg on cpu: $(cat "$out/timing-cpu.json")"
if [ -n "${GNN_BENCH:-}" ]; then
    "$GNN_BENCH" --device "$gpu" --rounds 21 --out "$out/gnn-encoder-scaling-cuda.png" > "$out/gnn-bench.txt" 2>&1
    log "gnn bench: $(tail -5 "$out/gnn-bench.txt" | tr '\n' ' ')"
fi
export THREADS=1
long=$(( ${BUDGET:-480} - SECONDS ))
[ "$long" -lt 60 ] && long=60
log "experiments: $long s at most"
jobs=()
for s in $seeds; do
    timeout "$long" scripts/search_table.sh configs/amc-ddpg-resnet20.toml "$s" > /dev/null 2> "$out/resnet20-s$s.err" &
    jobs+=($!)
    SKIP_DDPG=1 timeout "$long" scripts/transfer_table.sh "$s" "$adapt" > /dev/null 2> "$out/transfer-s$s.err" &
    jobs+=($!)
    for e in fmnist-vgg7 fmnist-mobilenetv2 mnist-lenet5; do
        SEARCH_ENV=envs/$e.toml timeout "$long" scripts/search_table.sh configs/amc-ddpg.toml "$s" > /dev/null 2> "$out/ddpg-$e-s$s.err" &
        jobs+=($!)
    done
done
for j in "${jobs[@]}"; do wait "$j" || log "job $j failed ($?)"; done
log "experiments done"
# The tables only gather what is finished (a seed cut short by the timeout fails here).
t=(env GATHER=1 timeout 60)
"${t[@]}" scripts/search_table.sh configs/amc-ddpg-resnet20.toml "$seeds" > "$out/resnet20-table.md" 2>> "$out/tables.err"
for e in fmnist-vgg7 fmnist-mobilenetv2 mnist-lenet5; do
    SEARCH_ENV=envs/$e.toml "${t[@]}" scripts/search_table.sh configs/amc-ddpg.toml "$seeds" > "$out/ddpg-$e-table.md" 2>> "$out/tables.err"
done
SKIP_DDPG= "${t[@]}" scripts/transfer_table.sh "$seeds" "$adapt" > "$out/transfer-table.md" 2>> "$out/tables.err"
cat "$out"/*table.md | tee -a "$out/log.txt"
tar czf "$out/runs.tar.gz" --exclude='*.tfevents.*' runs/table-* runs/gnn-train-s* runs/transfer-* runs/timing-* checkpoints/fmnist-vgg7.safetensors checkpoints/fmnist-mobilenetv2.safetensors 2>> "$out/tables.err"
cat "$out"/*.err > "$out/errors.txt" 2>/dev/null
rm -f "$out"/*.err
log "done"
