#!/usr/bin/env bash
# Fetch, on a machine with network, the wheels the lent GPU machine lacks (it can reach no registry):
# seqlab's config stack (hydra-core, omegaconf, antlr4) and fairscale. All are pure Python, so the wheels built
# here install on the GPU machine's Python 3.12 too. check.sh installs them with --no-index.
# Versions follow pyproject.toml's pins; antlr4 and fairscale publish source only, so they are built into wheels.
set -euo pipefail
cd "$(dirname "$0")"
PIP="${PIP:-python3 -m pip}"
rm -rf wheels
mkdir -p wheels
$PIP download --quiet --no-deps --only-binary=:all: -d wheels hydra-core==1.3.8 omegaconf==2.3.1
$PIP wheel --quiet --no-deps -w wheels antlr4-python3-runtime==4.9.3 fairscale==0.4.13
ls -l wheels
