#!/usr/bin/env bash
# The MPI farm under a real mpirun (oversubscribed): the same ok config_ids as a single-process
# run, results written only by rank 0, work spread over both worker ranks.
source "$DNNSCAPE_SOURCE/tests/app/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe --bind-to none -np 3)

"$DNNSCAPE" run "$SPECS/slow-fc.yaml" -o "$WORK/single.h5" --plain-progress >/dev/null 2>&1 || fail "single-process run"
expect_exit 0 "${MPIRUN[@]}" "$DNNSCAPE" run "$SPECS/slow-fc.yaml" -o "$WORK/farm.h5" --plain-progress
grep -q "done: ran 64 configs (64 ok)" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "farm summary"; }
[[ $(grep -c "^results:" "$WORK/out") == 1 ]] || fail "more than one rank reported"

"$PYTHON" - "$WORK/single.h5" "$WORK/farm.h5" <<'PY'
import sys, h5py
def load(path):
    with h5py.File(path, "r") as f:
        ids = f["runs/config_id"][()]
        st = f["runs/status"][()]
        ranks = f["runs/rank"][()]
    assert len(ids) == len(set(ids)), "duplicate rows"
    return {i for i, s in zip(ids, st) if s == b"ok"}, set(ranks.tolist())
single, _ = load(sys.argv[1])
farm, ranks = load(sys.argv[2])
assert single == farm, (len(single), len(farm))
assert ranks == {1, 2}, ranks   # both workers got work; the master (rank 0) only writes
print(f"farm: {len(farm)} ok configs, same set as the single-process run, ranks {sorted(ranks)}")
PY
echo "mpi farm test passed"
