# Shared by the CLI tests: fail loudly, a scratch dir, and the python that has h5py.
set -euo pipefail
: "${DNNSCAPE:?DNNSCAPE must point at the dnnscape binary}"
: "${DNNSCAPE_SOURCE:?DNNSCAPE_SOURCE must point at the source tree}"
PYTHON=${PYTHON:-/usr/bin/python3}
SPECS="$DNNSCAPE_SOURCE/tests/app/specs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dnnscape-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_exit CODE CMD... : runs CMD, asserts its exit code, leaves stdout/stderr in $WORK/out, $WORK/err
expect_exit() {
  local want=$1; shift
  set +e; "$@" >"$WORK/out" 2>"$WORK/err"; local got=$?; set -e
  [[ $got == "$want" ]] || { cat "$WORK/out" "$WORK/err" >&2; fail "exit $got, wanted $want: $*"; }
}
# rows_now FILE: complete /runs rows of a results file, read as a SWMR reader (0 if unreadable)
rows_now() {
  "$PYTHON" - "$1" <<'PY' 2>/dev/null || echo 0
import sys, h5py
try:
    with h5py.File(sys.argv[1], "r", libver="latest", swmr=True) as f:
        print(min(len(d) for d in f["runs"].values()))
except Exception:
    print(0)
PY
}
