# shellcheck shell=bash
# Shared by the Slurm script tests: a private one-node cluster (slurm/dev-cluster) in the test's
# scratch dir on free ports, stopped on exit whatever happens, and helpers to wait for jobs.
source "$DNNSCAPE_SOURCE/tests/app/lib.sh"
DEV_CLUSTER="$DNNSCAPE_SOURCE/slurm/dev-cluster"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# mpirun inside the allocation on this small machine: oversubscribe, no binding.
MPIRUN_ARGS="--allow-run-as-root --oversubscribe --bind-to none"

command -v slurmctld >/dev/null && command -v munged >/dev/null ||
  fail "slurm-wlm and munge are not installed (scripts/install-deps installs them)"
"$DNNSCAPE" submit --help >/dev/null 2>&1 ||
  fail "$DNNSCAPE has no 'submit' command (app/main.cpp must dispatch it to dnnscape::slurm::slurm_command)"

free_ports() {
  "$PYTHON" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(",".join(str(s.getsockname()[1]) for s in socks))
PY
}

CLUSTER="$WORK/cluster"
start_cluster() {
  local line
  line=$("$DEV_CLUSTER" start --dir "$CLUSTER" --ports "$(free_ports)") || fail "dev-cluster start"
  [[ $line == "export SLURM_CONF=$CLUSTER/slurm.conf" ]] || fail "dev-cluster printed '$line'"
  eval "$line"
}
stop_cluster() { [[ -d $CLUSTER ]] && "$DEV_CLUSTER" stop --dir "$CLUSTER" 2>/dev/null || true; }
trap 'stop_cluster; rm -rf "$WORK"' EXIT

# submit ARGS...: runs dnnscape submit, leaves its output in $WORK/out, sets JOB to the job id.
submit() {
  expect_exit 0 "$DNNSCAPE" submit "$@"
  JOB=$(sed -n 's/^submitted job\( array\)\? \([0-9]\+\).*/\2/p' "$WORK/out" | head -1)
  [[ -n $JOB ]] || { cat "$WORK/out"; fail "no job id in the submit output"; }
}

job_state() { squeue -h -t all -j "$1" -o %T 2>/dev/null | sort -u | tr '\n' ' ' | sed 's/ $//'; }

# wait_job ID SECONDS: until every task of the job has ended; fails unless all COMPLETED. The
# transient states (SIGNALING at the time limit, before the requeue, and the like) are not ends.
wait_job() {
  local id=$1 limit=$2 start=$SECONDS state
  while :; do
    state=$(job_state "$id")
    if [[ -n $state && ! $state =~ (PENDING|RUNNING|CONFIGURING|COMPLETING|REQUEUE|SUSPENDED|SIGNALING|STAGE_OUT|RESIZING) ]]; then
      break
    fi
    ((SECONDS - start < limit)) || { scontrol show job "$id" >&2 || true; fail "job $id still '$state' after $limit s"; }
    sleep 1
  done
  [[ $state == COMPLETED ]] || { scontrol show job "$id" >&2 || true; fail "job $id ended $state"; }
}

# wait_for_file_line FILE REGEX SECONDS
wait_for_line() {
  local start=$SECONDS
  until grep -qE "$2" "$1" 2>/dev/null; do
    ((SECONDS - start < $3)) || fail "no line matching '$2' in $1 after $3 s"
    sleep 0.2
  done
}

# check_results FILE N: N rows, every config_id once, all ok.
check_results() {
  "$PYTHON" - "$1" "$2" <<'PY'
import sys, h5py
path, n = sys.argv[1], int(sys.argv[2])
with h5py.File(path, "r", libver="latest", swmr=True) as f:
    ids = list(f["runs/config_id"][()])
    st = [s.decode() for s in f["runs/status"][()]]
assert len(ids) == n, f"{path}: {len(ids)} rows, wanted {n}"
assert len(set(ids)) == n, f"{path}: duplicate config_ids"
assert all(s == "ok" for s in st), f"{path}: statuses {sorted(set(st))}"
print(f"{path}: {n} configs, each exactly once, all ok")
PY
}
# check_jobs FILE JOB RESTARTS: /jobs holds one row per run of job JOB, restarts 0..RESTARTS.
check_jobs() {
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import sys, h5py
path, job, restarts = sys.argv[1], sys.argv[2], int(sys.argv[3])
with h5py.File(path, "r", libver="latest", swmr=True) as f:
    ids = [s.decode() for s in f["jobs/job_id"][()]]
    counts = list(f["jobs/restart_count"][()])
    started = [s.decode() for s in f["jobs/started_utc"][()]]
assert ids == [job] * (restarts + 1), f"{path}: /jobs job_id {ids}, wanted {restarts + 1} x {job}"
assert counts == list(range(restarts + 1)), f"{path}: /jobs restart_count {counts}"
assert started == sorted(started) and all(started), started
print(f"{path}: /jobs records job {job}, restarts {counts}")
PY
}
