#!/usr/bin/env bash
# Scenarios 1 and 2 (engine limit, model server) on a GPU: by default on `random-1b` (a
# random Llama with TinyLlama-1.1B's layout) in bfloat16, streamhost against `transformers
# serve --continuous-batching` on the same folder, both on their default device (the GPU).
#
# Runs from the repository root with the machine's own python3 and torch; no install of
# streamhost is needed (src/ goes on PYTHONPATH). Packages that python3 lacks can come as
# wheels in .whl/ (installed into /tmp/site first). Results go to $OUT (default
# benchmarks/results/gpu) as gpu-results.tgz with the logs beside it.
#
#   OUT=/tmp/gpu bash benchmarks/gpu.sh [--concurrency 1,8,32,64] [--repeats 3]
#   MODEL=tiny STEPS=engine bash benchmarks/gpu.sh    (another model; one scenario)
set -uo pipefail

OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH
else
    export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 STREAMHOST_CACHE=${STREAMHOST_CACHE:-/tmp/streamhost-cache}
export TMPDIR=${TMPDIR:-/tmp}
MODEL=${MODEL:-random-1b}
ARGS=(--model "$MODEL" --repeats 3 "$@")  # concurrency 1,8,32 unless given
STEPS=" ${STEPS:-engine server} "  # which scenarios to run

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, \
'transformers', transformers.__version__, torch.cuda.get_device_name())" || exit 1
command -v transformers || echo "transformers CLI not on PATH: the peer will be skipped"

start=$(date +%s)
# A built-in model is built here, once, so that its build time stays out of the scenarios.
if python3 -m streamhost.cli models path "$MODEL" 2>/dev/null; then
    echo "model ready in $(($(date +%s) - start)) s"
fi

# Each step has a time limit (ENGINE_S, SERVER_S) so that a lease ends with results.
if [[ $STEPS == *" engine "* ]]; then
    timeout "${ENGINE_S:-200}" python3 -m streamhost.cli bench --scenario engine "${ARGS[@]}" \
        --out "$OUT/results" 2>&1 | tee "$OUT/engine.log"
fi
# The peer can fail on a machine we have not tried it on: then measure ours alone.
rc=0
if [[ $STEPS == *" server "* ]]; then
    timeout "${SERVER_S:-300}" python3 -m streamhost.cli bench --scenario server "${ARGS[@]}" \
        --out "$OUT/results" 2>&1 | tee "$OUT/server.log"
    rc=${PIPESTATUS[0]}
fi
if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then
    timeout "${SERVER_S:-300}" python3 -m streamhost.cli bench --scenario server --no-peer \
        "${ARGS[@]}" --out "$OUT/results" 2>&1 | tee -a "$OUT/server.log"
fi
tar -C "$OUT" -czf "$OUT/gpu-results.tgz" results && rm -rf "$OUT/results"
tar -C "$TMPDIR" -czf "$OUT/server-logs.tgz" streamhost-bench 2>/dev/null
echo "done in $(($(date +%s) - start)) s"
