#!/usr/bin/env bash
# Packs the pinned packages the GPU machine lacks (it has torch, transformers, accelerate; no network) into
# .gpu/site.tar.xz for bench/gpu_check.sh: wheels for CPython 3.12 on x86-64, unpacked, without the parts a
# training run never loads (Unsloth Studio's web app, bitsandbytes' builds for CUDA < 13 and ROCm), so the
# carried tree stays far under the device tool's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
PACKAGES=(unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 peft==0.21.2 datasets==4.8.4 dill==0.4.1
  multiprocess==0.70.19 bitsandbytes==0.50.2 cut_cross_entropy==25.1.1 msgspec==0.22.0 tyro==1.0.17
  docstring_parser==0.18.0 typeguard==4.6.1 math-verify==0.9.0 latex2sympy2_extended==1.11.0
  antlr4-python3-runtime==4.13.2 hf_transfer==0.1.9 structlog==26.1.0 json5==0.17.3 nest-asyncio==1.6.0
  torchao==0.18.0)
wheels=$(mktemp -d) site=$(mktemp -d)
trap 'rm -rf "$wheels" "$site"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$wheels" "${PACKAGES[@]}"
for wheel in "$wheels"/*.whl; do python3 -m zipfile -e "$wheel" "$site"; done
rm -rf "$site/studio" "$site"/bitsandbytes/libbitsandbytes_cuda1[12]*.so "$site"/bitsandbytes/libbitsandbytes_rocm*
mkdir -p .gpu
tar cJf .gpu/site.tar.xz -C "$site" .
ls -la .gpu/site.tar.xz
