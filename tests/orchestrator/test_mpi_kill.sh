#!/usr/bin/env bash
# Failures under mpirun: (1) an executor killed with SIGKILL in the middle of a config: the config
# is retried on the other worker and recorded (ok, or crashed after the retry), the sweep goes on;
# (2) the whole mpirun killed with SIGKILL at a random moment: the file opens with h5py, and the
# same command completes the sweep with no row lost or duplicated; (3) SIGUSR1 to mpirun (which
# forwards it to every rank) stops the sweep gracefully with a message that says how to resume.
source "$DNNSCAPE_SOURCE/tests/app/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
spec="$SPECS/slow-fc.yaml"
MPIRUN=(mpirun --oversubscribe --bind-to none -np 3)

# wait_rows FILE N PID: until FILE has N rows (fails if PID ends first)
wait_rows() {
  for _ in $(seq 1 900); do
    (( $(rows_now "$1") >= $2 )) && return 0
    kill -0 "$3" 2>/dev/null || fail "the sweep ended before $2 rows"
    sleep 0.1
  done
  fail "no $2 rows after 90 s"
}
# The executors of this mpirun: children of its rank processes.
executors_of() {
  local rank
  for rank in $(pgrep -P "$1"); do pgrep -P "$rank" || true; done
}
check_file() {  # FILE: opens, 64 unique config_ids equal to the clean run's
  "$PYTHON" - "$1" "$WORK/clean.h5" <<'PY'
import sys, h5py
def load(path):
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        r = f["runs"]
        n = min(len(d) for d in r.values())
        ids = list(r["config_id"][:n])
        assert len(ids) == len(set(ids)), f"duplicate rows in {path}"
        return dict(zip(ids, zip(r["status"][:n], r["message"][:n])))
got, clean = load(sys.argv[1]), load(sys.argv[2])
assert set(got) == set(clean) and len(got) == 64, (len(got), len(clean))
bad = {k: v for k, v in got.items() if v[0] != b"ok" and not (v[0] == b"crashed" and b"attempt 2" in v[1])}
assert not bad, bad
PY
}

"$DNNSCAPE" run "$spec" -o "$WORK/clean.h5" --plain-progress >/dev/null 2>&1 || fail "clean run"

# (1) SIGKILL one executor in the middle of a config.
"${MPIRUN[@]}" "$DNNSCAPE" run "$spec" -o "$WORK/exec.h5" --plain-progress >"$WORK/exec.log" 2>&1 &
mpi=$!
wait_rows "$WORK/exec.h5" 4 $mpi
# Only an executor that is running a config: one blocked reading its stdin (syscall 0 on fd 0)
# sits idle between batches, and the runner replaces it without blaming a config.
victim=""
for _ in $(seq 1 200); do
  for pid in $(executors_of $mpi); do
    sc=$(cat "/proc/$pid/syscall" 2>/dev/null) || sc=unreadable  # then any executor will do
    [[ $sc != "0 0x0 "* ]] && { victim=$pid; break 2; }
  done
  sleep 0.01
done
[[ -n $victim ]] || fail "no busy executor found under mpirun $mpi"
kill -9 "$victim"
wait $mpi || { cat "$WORK/exec.log"; fail "the sweep did not survive a killed executor"; }
grep -q "done: ran 64 configs" "$WORK/exec.log" || { cat "$WORK/exec.log"; fail "summary"; }
check_file "$WORK/exec.h5"
"$PYTHON" - "$WORK/exec.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    msgs = [(s.decode(), m.decode()) for s, m in zip(f["runs/status"][()], f["runs/message"][()])]
retried = [x for x in msgs if "attempt 2" in x[1]]
assert len(retried) == 1, f"the killed config is retried once and recorded: {retried}"
print("killed executor: the config was retried ->", retried[0])
PY

# (2) SIGKILL the whole mpirun at a random moment, then the same command again.
out="$WORK/job.h5"
"${MPIRUN[@]}" "$DNNSCAPE" run "$spec" -o "$out" --plain-progress >"$WORK/job1.log" 2>&1 &
mpi=$!
wait_rows "$out" $((3 + RANDOM % 30)) $mpi
kill -9 $mpi
wait $mpi 2>/dev/null || true
# Orphaned ranks notice their launcher is gone and exit (executors follow their rank).
for _ in $(seq 1 300); do pgrep -f -- "-o $out" >/dev/null || break; sleep 0.1; done
pgrep -f -- "-o $out" >/dev/null && { pgrep -af -- "-o $out"; fail "ranks outlived a killed mpirun"; }
before=$(rows_now "$out")
"$PYTHON" - "$out" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r", libver="latest", swmr=True) as f:
    n = min(len(d) for d in f["runs"].values())
    ids = list(f["runs/config_id"][:n])
    assert len(ids) == len(set(ids)), "duplicate rows after kill -9"
PY
expect_exit 0 "${MPIRUN[@]}" "$DNNSCAPE" run "$spec" -o "$out" --plain-progress
grep -q "already recorded" "$WORK/err" || { cat "$WORK/out" "$WORK/err"; fail "no resume"; }
check_file "$out"
echo "mpirun killed at $before rows: resumed to 64 unique rows"

# (3) SIGUSR1 to mpirun: graceful stop, a resume hint, then the same command finishes.
out="$WORK/usr1.h5"
"${MPIRUN[@]}" "$DNNSCAPE" run "$spec" -o "$out" --plain-progress >"$WORK/usr1.out" 2>"$WORK/usr1.err" &
mpi=$!
wait_rows "$out" 5 $mpi
kill -USR1 $mpi
set +e; wait $mpi; code=$?; set -e
[[ $code == 130 ]] || { cat "$WORK/usr1.out" "$WORK/usr1.err"; fail "exit $code after SIGUSR1, wanted 130"; }
grep -q "To resume where it stopped, run the same command again" "$WORK/usr1.out" || { cat "$WORK/usr1.out"; fail "resume hint"; }
grep -q "mpirun -np 3 dnnscape run" "$WORK/usr1.out" || { cat "$WORK/usr1.out"; fail "resume command"; }
expect_exit 0 "${MPIRUN[@]}" "$DNNSCAPE" run "$spec" -o "$out" --plain-progress
check_file "$out"
echo "mpi kill test passed"
