#!/usr/bin/env bash
# Download, on a machine with network access, the wheels the GPU machine lacks (Python 3.12,
# manylinux x86_64), into a folder that travels with the working tree (see docs/gpu.md).
#
#   bash bench/gpu/download_wheels.sh [DEST]          # DEST defaults to bench/gpu/wheels (git-ignored)
#
# The GPU machine has torch, transformers, peft, accelerate, safetensors, opencv-headless,
# tensorboard, tqdm, pytest and the rest of DEVICE_HAS below, but not diffusers, pydantic,
# albumentations or bitsandbytes. pip resolves the pinned packages for that platform
# (--dry-run --report); every resolved package the machine lacks is downloaded without
# dependencies. Everything that travels must stay under 64 MiB together with the working tree,
# so the wheels get WHEEL_LIMIT_MIB (default 36); over it, bitsandbytes is left out and the
# check trains with torch AdamW instead of 8-bit AdamW (it says so in its notes).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="${1:-$HERE/wheels}"
PY="${PYTHON:-python3}"
LIMIT_MIB="${WHEEL_LIMIT_MIB:-36}"
# The versions furlora is tested with (pyproject.toml lower bounds).
PINS=(diffusers==0.42.1 pydantic==2.14.4 albumentations==2.0.8)
# Resolved without dependencies: bitsandbytes needs torch, numpy and packaging, all on the machine
# (resolving it would fetch a whole CUDA torch just to read its metadata).
NODEPS_PINS=(bitsandbytes==0.50.2)
# Installed anyway but needed in a newer version than the machine may have (pydantic needs >= 4.16).
ALWAYS="typing-extensions"
# Python packages of the GPU machine's image (the device notes' package list), normalised names.
DEVICE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning
pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels
sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
xarray xxhash yarl zipp"

TARGET=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none --only-binary=:all:)
for n in 39 35 34 31 28 27 24 17; do TARGET+=(--platform "manylinux_2_${n}_x86_64"); done
TARGET+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "resolving ${PINS[*]} for Python 3.12 manylinux x86_64 ..."
"$PY" -m pip install --dry-run --quiet --ignore-installed --target "$work/target" --report "$work/report.json" \
    "${TARGET[@]}" "${PINS[@]}"

"$PY" - "$work/report.json" "$DEVICE_HAS" "$ALWAYS" "${PINS[@]}" > "$work/missing.txt" <<'PYEOF'
# Walk the resolved dependency graph from the pinned packages, but not into packages the GPU
# machine already has: their own dependencies (torch's CUDA libraries ...) are there too.
import json, re, sys
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
report, has, always, pins = json.load(open(sys.argv[1])), set(sys.argv[2].split()), set(sys.argv[3].split()), sys.argv[4:]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
resolved = {norm(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
target = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
todo, needed = [norm(Requirement(p).name) for p in pins], []
while todo:
    name = todo.pop()
    if name in needed or name not in resolved:
        continue
    if name in has and name not in always:
        continue
    needed.append(name)
    for text in resolved[name].get("requires_dist", []):
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(target):
            todo.append(norm(req.name))
for name in always:
    if name in resolved and name not in needed:
        needed.append(name)
for name in sorted(needed):
    print(f"{resolved[name]['name']}=={resolved[name]['version']}")
PYEOF
printf '%s\n' "${NODEPS_PINS[@]}" >> "$work/missing.txt"
echo "the GPU machine lacks: $(tr '\n' ' ' < "$work/missing.txt")"

mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps "${TARGET[@]}" -d "$DEST" $(cat "$work/missing.txt")

size_mib() { du -sm "$DEST" | cut -f1; }
if [ "$(size_mib)" -gt "$LIMIT_MIB" ] && ls "$DEST"/bitsandbytes-*.whl >/dev/null 2>&1; then
    echo "note: $(du -sm "$DEST"/bitsandbytes-*.whl | cut -f1) MiB of bitsandbytes would take the wheels over" \
         "$LIMIT_MIB MiB: left out; the check trains adamw8bit presets with torch AdamW and notes it"
    rm -f "$DEST"/bitsandbytes-*.whl
fi
ls -1 "$DEST"
echo "wheel folder: $DEST, $(du -sh "$DEST" | cut -f1) ($(du -sb "$DEST" | cut -f1) bytes), limit $LIMIT_MIB MiB"
