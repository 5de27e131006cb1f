#!/usr/bin/env bash
# Does a built wheel work without the source tree? Builds a wheel from the checkout's
# tracked files, installs it (--no-deps) into a fresh venv, and from a folder outside the
# checkout runs `sinet-md aspirin --steps 10` and the tests that read the shipped files.
#
#   bash scripts/check_wheel.sh [PYTHON]
#
# PYTHON (default: the checkout's .venv/bin/python, else python3) builds the wheel and lends
# its installed dependencies (torch, e3nn, ase, ...) to the fresh venv: its site-packages
# folder is added to the venv's path as a plain folder, so that its .pth files (among
# them an editable install of sinet-ase) are not run and the wheel's copy is the one
# imported; the script checks that. Offline: nothing is downloaded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${1:-}
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sinet_wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

echo "== wheel from the tracked files of $ROOT (a clean copy: no build/ left from earlier builds)"
mkdir -p "$WORK/src" "$WORK/wheel" "$WORK/run"
(cd "$ROOT" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation "$WORK/src" -w "$WORK/wheel" 2>/dev/null
WHEEL=$(ls "$WORK"/wheel/sinet_ase-*.whl)
echo "$(basename "$WHEEL"): $("$PYTHON" -c "import sys, zipfile; print(len(zipfile.ZipFile(sys.argv[1]).namelist()))" "$WHEEL") files"

echo "== fresh venv with the wheel only"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
DEPS=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
VSITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DEPS" > "$VSITE/zz_dependencies.pth"
"$VPY" -m pip install --quiet --no-deps --no-index "$WHEEL"

cd "$WORK/run"  # outside the checkout: nothing here can import the source tree
IMPORTED=$("$VPY" -c 'import sinet_ase; print(sinet_ase.__file__)')
echo "sinet_ase imported from $IMPORTED"
case "$IMPORTED" in
    "$VSITE"/*) ;;
    *) echo "FAIL: sinet_ase is not the wheel's copy" >&2; exit 1 ;;
esac

echo "== sinet-md aspirin --steps 10"
"$WORK/venv/bin/sinet-md" aspirin --steps 10

echo "== tests of the shipped files, from a copy of tests/ outside the checkout"
cp -r "$ROOT/tests" "$WORK/run/tests"
"$VPY" -m pytest -q -p no:cacheprovider -rs "$WORK/run/tests/test_potentials.py" "$WORK/run/tests/test_packaging.py"
echo "== wheel check passed"
