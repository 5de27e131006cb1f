# Shared paths and settings for the peer scripts (sourced; set MOL first to get the data files).
#   PEERS_DIR   this benchmark's folder (benchmarks/peers), found from this file's path: scripts, configs
#   PEERS_WORK  work folder (env, default /tmp/sinet-peers): venvs mace/ nequip/, split data data/,
#               runs runs/, measured epoch times timing/
#   SHARED_DATA the DFT data sets (env, default ../shared/data relative to the project root)
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEERS_DIR=$(dirname "$SCRIPTS")
ROOT=$(cd "$PEERS_DIR/../.." && pwd)
# absolute paths, since the runners work inside their output folder
export PEERS_WORK=$(realpath -m "${PEERS_WORK:-/tmp/sinet-peers}")
SHARED_DATA=$(realpath -m "${SHARED_DATA:-$ROOT/../shared/data}")
DATA=$PEERS_WORK/data
TIMING=$PEERS_WORK/timing
# one thread everywhere
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMEXPR_NUM_THREADS=1 VECLIB_MAXIMUM_THREADS=1
export TORCH_NUM_THREADS=1 PYTHONUNBUFFERED=1
case "${MOL:-}" in
  '') ;;
  ethanol) TRAIN=$DATA/ethanol_train950.xyz; VALID=$DATA/ethanol_valid50.xyz
           TEST=$SHARED_DATA/rmd17_ethanol/test_MD.xyz; ISO=$SHARED_DATA/rmd17_ethanol/isolated_atoms.xyz ;;
  acac)    TRAIN=$DATA/acac_train450.xyz; VALID=$DATA/acac_valid50.xyz
           TEST=$SHARED_DATA/acac/test_MD_300K.xyz; ISO=$SHARED_DATA/acac/isolated_atoms.xyz ;;
  *) echo "unknown molecule '$MOL' (ethanol|acac)" >&2; exit 2 ;;
esac
if [ -n "${MOL:-}" ] && [ ! -f "$TRAIN" ]; then
  echo "missing $TRAIN: run bash $PEERS_DIR/setup.sh first (PEERS_WORK=$PEERS_WORK)" >&2; exit 2
fi
