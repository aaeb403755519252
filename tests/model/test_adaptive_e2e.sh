#!/usr/bin/env bash
# Adaptive sampling end to end: exactly N ok rows (the initial Sobol configs among them), no
# duplicates after kill -9 and resume or a rerun, /predicted holds the whole grid (read by h5py),
# and the same under an MPI farm.
source "$DNNSCAPE_SOURCE/tests/app/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
spec="$DNNSCAPE_SOURCE/tests/model/specs/adaptive-fc.yaml"
out="$WORK/adaptive.h5"

check() {  # FILE N
  "$PYTHON" - "$1" "$2" "$spec" <<'PY'
import sys, h5py
path, n = sys.argv[1], int(sys.argv[2])
with h5py.File(path, "r") as f:
    ids = list(f["runs/config_id"][()])
    st = set(f["runs/status"][()])
    p = f["predicted"]
    assert p.attrs["metric"] in ("step_time_s", b"step_time_s")
    pid = list(p["config_id"][()])
    pred, lo, hi = p["predicted"][()], p["lower_90"][()], p["upper_90"][()]
    measured = p["measured"][()]
    extra = p["extrapolated"][()]
    fam = set(p["family"][()])
    batch = set(p["batch"][()].tolist())
assert len(ids) == n, (len(ids), n)
assert len(set(ids)) == len(ids), "duplicate rows"
assert st == {b"ok"}, st
assert len(pid) == 60 and len(set(pid)) == 60, len(pid)
assert set(ids) <= set(pid)
assert int(measured.sum()) == n, measured.sum()
assert all(0 < l < v < h for l, v, h in zip(lo, pred, hi))
assert fam == {b"fc"} and batch == {8, 16, 32}
print(f"{path}: {n} ok rows, /predicted {len(pid)} rows ({int(extra.sum())} extrapolated)")
PY
}

"$DNNSCAPE" run "$spec" -o "$out" --plain-progress >"$WORK/run1.log" 2>&1 &
pid=$!
for _ in $(seq 1 900); do
  n=$(rows_now "$out")
  (( n >= 10 )) && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -0 $pid 2>/dev/null || { cat "$WORK/run1.log"; fail "the sweep finished before it could be killed"; }
kill -9 $pid
wait $pid 2>/dev/null || true
before=$(rows_now "$out")
(( before >= 10 && before < 20 )) || fail "$before rows after kill -9"

expect_exit 0 "$DNNSCAPE" run "$spec" -o "$out" --plain-progress
grep -q "already recorded" "$WORK/err" || { cat "$WORK/out" "$WORK/err"; fail "no resume"; }
grep -q "adaptive: 20 of 60 configs measured; predicted 60" "$WORK/err" || { cat "$WORK/err"; fail "adaptive summary"; }
check "$out" 20
expect_exit 0 "$DNNSCAPE" status "$out"
grep -q "60 in the spec: 20 done, 0 skipped, 0 failed, 0 remaining" "$WORK/out" || { cat "$WORK/out"; fail "status of an adaptive sweep"; }

# A rerun measures nothing more and rewrites /predicted.
expect_exit 0 "$DNNSCAPE" run "$spec" -o "$out" --plain-progress
check "$out" 20

# Under an MPI farm (2 workers): batches of at least 4, the same protocol per round.
expect_exit 0 mpirun --oversubscribe --bind-to none -np 3 "$DNNSCAPE" run "$spec" -o "$WORK/farm.h5" --plain-progress
grep -q "adaptive: 20 of 60 configs measured" "$WORK/err" || { cat "$WORK/out" "$WORK/err"; fail "farm adaptive"; }
check "$WORK/farm.h5" 20
# cost_aware: the same budget, picked per predicted second; the spec records the choice.
sed 's/seed: 1}/seed: 1, cost_aware: true}/' "$spec" >"$WORK/cost.yaml"
grep -q "cost_aware: true" "$WORK/cost.yaml" || fail "could not write the cost_aware spec"
expect_exit 0 "$DNNSCAPE" plan "$WORK/cost.yaml"
grep -q "8 of them Sobol first, the rest picked per predicted second" "$WORK/out" || { cat "$WORK/out"; fail "plan of a cost_aware spec"; }
expect_exit 0 "$DNNSCAPE" run "$WORK/cost.yaml" -o "$WORK/cost.h5" --plain-progress
grep -q "adaptive: 20 of 60 configs measured; predicted 60" "$WORK/err" || { cat "$WORK/err"; fail "cost_aware adaptive"; }
# The cost it picked by was calibrated on the rows' /runs/wall_s (20 rows, a footprint term).
grep -qE "adaptive: cost of measuring a config: wall_s = [0-9.]+ x steps \+ [0-9.]+ ns/byte x footprint \+ [0-9.]+ ms \(from 20 rows\)" "$WORK/err" || { cat "$WORK/err"; fail "cost_aware's calibration"; }
check "$WORK/cost.h5" 20
# A rerun measures nothing and prices from the file's rows alone (their /runs/wall_s).
expect_exit 0 "$DNNSCAPE" run "$WORK/cost.yaml" -o "$WORK/cost.h5" --plain-progress
grep -q "20 of 20 configs already recorded, 0 to run" "$WORK/err" || { cat "$WORK/err"; fail "an adaptive rerun counts its candidates as to run"; }
grep -q "ran 0 configs" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "cost_aware rerun measured again"; }
grep -qE "adaptive: cost of measuring a config: wall_s = .* \(from 20 rows\)" "$WORK/err" || { cat "$WORK/err"; fail "cost_aware rerun's calibration from the file"; }
check "$WORK/cost.h5" 20
echo "adaptive e2e test passed"
