#!/bin/bash
# usage: bash benchmarks/peers/setup.sh
# Creates the two peer venvs under PEERS_WORK (default /tmp/sinet-peers) and writes the shared
# train/valid split files to $PEERS_WORK/data from SHARED_DATA (default <project root>/../shared/data).
# env TORCH_PIP_ARGS: extra pip arguments for torch, e.g. "--index-url https://download.pytorch.org/whl/cpu"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/common.sh"
mkdir -p "$PEERS_WORK"
for spec in mace:mace-torch==0.3.16 nequip:nequip==0.19.1; do
  name=${spec%%:*}; pkg=${spec#*:}; venv=$PEERS_WORK/$name
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # torch first, so that the peer package does not pull another torch version
  "$venv/bin/pip" install ${TORCH_PIP_ARGS:-} torch==2.13.0
  "$venv/bin/pip" install "$pkg"
  "$venv/bin/pip" freeze | grep -iE "mace|nequip|e3nn|torch|lightning" > "$venv/versions.txt"
  echo "[setup] $venv:"; cat "$venv/versions.txt"
done
"$PEERS_WORK/mace/bin/python" "$SCRIPTS/make_splits.py" "$SHARED_DATA" "$DATA"
echo "[setup] split files in $DATA"
