#!/usr/bin/env bash
# Acceptance: a small mixed (FC + RNN) spec under `mpirun -np 3` (oversubscribed) gets the same set
# of ok config_ids as the single-process run; rows carry rank, host, cores and workers_on_host;
# /hosts records the host; `dnnscape status` (text and --json) agrees with the file; with
# --workers-per-node 2 the two workers are pinned to disjoint cores.
source "$DNNSCAPE_SOURCE/tests/app/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe --bind-to none -np 3)
SPEC="$DNNSCAPE_SOURCE/tests/orchestrator/specs/tiny-fc-rnn.yaml"

"$DNNSCAPE" run "$SPEC" -o "$WORK/single.h5" --plain-progress >/dev/null 2>&1 || fail "single-process run"
expect_exit 0 "${MPIRUN[@]}" "$DNNSCAPE" run "$SPEC" -o "$WORK/farm.h5" --plain-progress
grep -q "done: ran 14 configs (14 ok)" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "farm summary"; }
grep -q "^farm: 14 configs on 2 workers" "$WORK/err" || { cat "$WORK/err"; fail "farm line"; }
expect_exit 0 "${MPIRUN[@]}" "$DNNSCAPE" run "$SPEC" -o "$WORK/pinned.h5" --plain-progress --workers-per-node 2

"$PYTHON" - "$WORK/single.h5" "$WORK/farm.h5" "$WORK/pinned.h5" <<'PY'
import sys, socket, h5py
def load(path):
    with h5py.File(path, "r") as f:
        r = f["runs"]
        ids = r["config_id"][()]
        assert len(ids) == len(set(ids)), "duplicate rows"
        rows = [dict(zip(r.keys(), vals)) for vals in zip(*(r[k][()] for k in r.keys()))]
        hosts = {k: f["hosts"][k][()] for k in f["hosts"].keys()} if "hosts" in f else None
    return rows, hosts
single, _ = load(sys.argv[1])
farm, hosts = load(sys.argv[2])
ok = lambda rows: {r["config_id"] for r in rows if r["status"] == b"ok"}
assert ok(single) == ok(farm) and len(ok(farm)) == 14, (len(ok(single)), len(ok(farm)))
assert {r["family"] for r in farm} == {b"fc", b"rnn"}
assert {int(r["rank"]) for r in farm} == {1, 2}, "the master only writes; both workers work"
assert all(r["host"] == socket.gethostname().encode() or r["host"] for r in farm)
assert all(int(r["workers_on_host"]) == 2 for r in farm)
assert all(r["cores"] == b"" for r in farm), "not pinned without --workers-per-node"
assert hosts is not None and len(hosts["hostname"]) == 1 and hosts["workers"][0] == 2, hosts
assert hosts["peak_gflops_f32"][0] > 0 and hosts["cpu_model"][0], hosts
pinned, _ = load(sys.argv[3])
assert ok(pinned) == ok(single)
cores = {int(r["rank"]): r["cores"].decode() for r in pinned}
assert all(c for c in cores.values()), cores
sets = [set(c.replace("-", ",").split(",")) for c in cores.values()]
assert len(sets) == 2 and not (sets[0] & sets[1]), f"core sets overlap: {cores}"
print(f"mixed farm: 14 ok configs as in the single-process run; pinned cores {cores}")
PY

# status, text and JSON, of the finished file.
expect_exit 0 "$DNNSCAPE" status "$WORK/farm.h5"
grep -q "configs: 14 in the spec: 14 done, 0 skipped, 0 failed, 0 remaining" "$WORK/out" || { cat "$WORK/out"; fail "status text"; }
grep -q "^fc " "$WORK/out" && grep -q "^rnn " "$WORK/out" || fail "status per family"
expect_exit 0 "$DNNSCAPE" status "$WORK/farm.h5" --json
"$PYTHON" - "$WORK/out" <<'PY'
import sys, json
j = json.load(open(sys.argv[1]))
assert j["configs"] == {"total": 14, "done": 14, "skipped": 0, "failed": 0, "remaining": 0}, j["configs"]
assert j["families"]["fc"]["total"] == 8 and j["families"]["rnn"]["total"] == 6, j["families"]
assert j["running"] is False and j["eta_s"] == 0 and len(j["slowest"]) == 5
PY
echo "mpi mixed test passed"
