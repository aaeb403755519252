#!/usr/bin/env bash
# kill -9 in the middle of `dnnscape run`, then the same command again: the file opens, nothing is
# lost or duplicated, and the final set of config_ids equals that of an uninterrupted run.
source "$(dirname "$0")/lib.sh"
spec="$SPECS/slow-fc.yaml"
out="$WORK/killed.h5"

"$DNNSCAPE" run "$spec" -o "$out" --plain-progress >"$WORK/run1.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  n=$(rows_now "$out")
  (( n >= 5 )) && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -0 $pid 2>/dev/null || { cat "$WORK/run1.log"; fail "the sweep finished before it could be killed"; }
kill -9 $pid
wait $pid 2>/dev/null || true
# The executor child is in its own process group; it notices EOF and exits.
before=$(rows_now "$out")
(( before >= 5 )) || fail "only $before rows visible after kill -9"

# The killed file opens with h5py (SWMR reader) and its rows are whole.
"$PYTHON" - "$out" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r", libver="latest", swmr=True) as f:
    n = min(len(d) for d in f["runs"].values())
    ids = [x for x in f["runs/config_id"][:n]]
    assert len(set(ids)) == len(ids), "duplicate rows"
    st = [x.decode() for x in f["runs/status"][:n]]
    assert set(st) <= {"ok", "skipped"}, st
PY

expect_exit 0 "$DNNSCAPE" run "$spec" -o "$out" --plain-progress
grep -q "already recorded" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "no resume"; }

"$DNNSCAPE" run "$spec" -o "$WORK/clean.h5" --plain-progress >/dev/null 2>&1 || fail "uninterrupted run"
"$PYTHON" - "$out" "$WORK/clean.h5" "$before" <<'PY'
import sys, h5py
def ids(path):
    with h5py.File(path, "r") as f:
        col = f["runs/config_id"][()]
        assert len(col) == len(set(col)), f"duplicates in {path}"
        st = f["runs/status"][()]
        assert all(s == b"ok" for s in st), st
        return set(col)
resumed, clean = ids(sys.argv[1]), ids(sys.argv[2])
assert resumed == clean, (len(resumed), len(clean))
assert len(clean) == 64
print(f"resumed after kill -9 at {sys.argv[3]} rows: {len(resumed)} config_ids, equal to the uninterrupted run")
PY
echo "kill/resume test passed"
