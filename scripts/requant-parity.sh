#!/usr/bin/env bash
# Parity of fastgen with llama.cpp on SmolLM2 requantised to each tensor type: a one-off
# measurement (the CI tests are the synthetic per-type models of tests/parity.rs).
#
#   bash scripts/requant-parity.sh [TYPE...]     # default: the types below
#
# For each TYPE (a llama-quantize type name): llama-quantize --allow-requantize the pinned
# SmolLM2 GGUF (Q4_1) to TYPE in $OUT (default /tmp/fastgen-requant), record llama.cpp's
# greedy fixture on it with scripts/greedy-reference.py --out (all prompts, 48 steps), and
# replay it in fastgen (tests/parity.rs, the ignored test parity_of_any_file), which prints
# the tensor types the file really holds (SmolLM2's 576-wide rows are not whole 256-element
# super-blocks, so llama-quantize writes another type for them under a K-quant), then the
# steps with llama.cpp's argmax, the near ties, the misses and mean / p99 / max |dlogprob|.
# TYPE+pure passes --pure (no k-quant mixture): Q2_K's mixture turns every 1,536-wide
# ffn_down, the only tensors that could be Q2_K, into Q3_K (its file holds the tensors of
# Q3_K_S), Q2_K+pure keeps them Q2_K.
# Needs llama.cpp's tools (scripts/build-llama-cpp.sh) and the model (fastgen fetch smollm2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOME_DIR=${FASTGEN_HOME:-$HOME/.cache/fastgen}
BIN=${LLAMA_CPP:-$HOME_DIR/llama.cpp}/bin
SRC=${SRC:-$HOME_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-/tmp/fastgen-requant}
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL Q2_K Q2_K+pure Q3_K_S Q3_K_M Q4_K_S Q4_K_M Q5_K_S Q6_K BF16)

mkdir -p "$OUT"
cd "$ROOT"
cargo test --release --test parity --no-run >/dev/null 2>&1 || cargo test --release --test parity --no-run
for t in "${TYPES[@]}"; do
  model="$OUT/smollm2-$t.gguf"
  fixture="$OUT/greedy-smollm2-$t.jsonl"
  flags=(--allow-requantize)
  [ "${t%+pure}" = "$t" ] || flags+=(--pure)
  [ -s "$model" ] || "$BIN/llama-quantize" "${flags[@]}" "$SRC" "$model" "${t%+pure}" 2 >"$OUT/quantize-$t.log" 2>&1
  [ -s "$fixture" ] || python3 scripts/greedy-reference.py "$model" "smollm2-$t" --out "$fixture" \
    --llama-cpp "$(dirname "$BIN")" 2>"$OUT/reference-$t.log"
  echo "== $t"
  FASTGEN_PARITY_FILE="$model" FASTGEN_PARITY_FIXTURE="$fixture" \
    cargo test --release --test parity parity_of_any_file -- --ignored --nocapture 2>&1 |
    grep -E "^/|steps,|panicked|miss" || true
done
