#!/usr/bin/env bash
# dnnscape submit against a real one-node Slurm (slurm/dev-cluster): a sweep end to end through
# paths that would execute code if anything were unquoted; a job that gets USR1 mid-sweep
# (scancel --signal=USR1 --batch, the signal Slurm sends ahead of the time limit) checkpoints,
# requeues itself and completes with every config exactly once; two systems as a job array;
# the --dry-run #SBATCH lines. The cluster is stopped on exit.
source "$DNNSCAPE_SOURCE/tests/slurm/lib-slurm.sh"
SLURM_SPECS="$DNNSCAPE_SOURCE/tests/slurm/specs"
T0=$SECONDS

# --dry-run: the #SBATCH lines, nothing submitted.
expect_exit 0 "$DNNSCAPE" submit "$SLURM_SPECS/tiny-fc.yaml" -o "$WORK/dry/out.h5" --nodes 2 \
  --time 01:30:00 --partition debug --account acct --constraint 'avx2&ib' --exclusive \
  --workers-per-node 3 --grace 90 --dry-run
for want in '--job-name="dnnscape-tiny-fc"' '--nodes=2' '--ntasks-per-node=3' '--time=01:30:00' \
  '--signal=B:USR1@90' '--requeue' '--open-mode=append' "--output=\"$WORK/dry/out.slurm-%j.out\"" \
  '--partition="debug"' '--account="acct"' '--constraint="avx2&ib"' '--exclusive'; do
  grep -qxF "#SBATCH $want" "$WORK/out" || { cat "$WORK/out"; fail "dry run lacks '#SBATCH $want'"; }
done
[[ ! -e $WORK/dry ]] || fail "--dry-run wrote files"

start_cluster
echo "cluster up after $((SECONDS - T0)) s"

# 1. A small sweep end to end. Every value that reaches the script is hostile: the spec path,
#    the results directory and file name, a system's environment value.
evil="$WORK/o'ne \"two\" \$(touch PWNED1) \`touch PWNED2\` ;touch PWNED3 #4 %j 100%"
mkdir -p "$evil/spec dir"
cp "$SLURM_SPECS/tiny-fc.yaml" "$evil/spec dir/t \$(touch PWNED5).yaml"
submit "$evil/spec dir/t \$(touch PWNED5).yaml" -o "$evil/res \`id\`.h5" --time 00:05:00 \
  --workers-per-node 2 --grace 30 --mpirun-args="$MPIRUN_ARGS"
grep -q "watch it: squeue -j $JOB" "$WORK/out" || fail "submit does not say how to watch the job"
wait_job "$JOB" 120
check_results "$evil/res \`id\`.h5" 8
[[ -s "$evil/res \`id\`.slurm-$JOB.out" ]] || { ls -la "$evil"; fail "no Slurm log next to the results"; }
grep -q '"event":"start".*"restart_count":0' "$evil/res \`id\`.slurm.jsonl" || fail "no start event"
grep -q '"outcome":"complete"' "$evil/res \`id\`.slurm.jsonl" || fail "no complete event"
echo "small sweep done after $((SECONDS - T0)) s"

# 2. USR1 in the middle of a sweep: checkpoint, requeue, resume, every config exactly once.
submit "$SLURM_SPECS/requeue-fc.yaml" -o "$WORK/rq/out.h5" --time 00:10:00 --workers-per-node 2 \
  --grace 60 --mpirun-args="$MPIRUN_ARGS"
log="$WORK/rq/out.slurm-$JOB.out"
wait_for_line "$log" '^progress .* [1-9][0-9]*/64 ' 120
scancel --signal=USR1 --batch "$JOB" || fail "scancel --signal=USR1"
wait_job "$JOB" 240
check_results "$WORK/rq/out.h5" 64
grep -q "^interrupted: ran" "$log" || { cat "$log"; fail "the sweep was not interrupted by USR1"; }
grep -q "requeueing job $JOB (restart 1)" "$log" || { cat "$log"; fail "the job did not requeue itself"; }
grep -q "^resuming .*configs already recorded" "$log" || { cat "$log"; fail "the restart did not resume"; }
side="$WORK/rq/out.slurm.jsonl"
grep -q '"outcome":"requeued"' "$side" || fail "no requeued event in $side"
grep -q "\"event\":\"start\".*\"job_id\":\"$JOB\".*\"restart_count\":1" "$side" || fail "no restart 1 in $side"
[[ $(scontrol show job "$JOB" | grep -o 'Restarts=[0-9]*') == Restarts=1 ]] || fail "Slurm counts no restart"
check_jobs "$WORK/rq/out.h5" "$JOB" 1 || fail "/jobs does not record the job and its restart"
echo "USR1 / requeue / resume done after $((SECONDS - T0)) s"

# 3. Two systems in one command: same resources, so one job array; a file per system. Launched
#    with srun --mpi=pmix this time (the other jobs used mpirun).
cat >"$WORK/systems.yaml" <<'YAML'
systems:
  base: {}
  other:
    env: {DNNSCAPE_TEST_MARK: "$(touch PWNED6) `touch PWNED7`"}
YAML
submit "$SLURM_SPECS/tiny-fc.yaml" -o "$WORK/sys/cmp.h5" --time 00:05:00 --grace 30 \
  --systems "$WORK/systems.yaml" --workers-per-node 2 --launcher srun
grep -q "^submitted job array $JOB (2 systems" "$WORK/out" || { cat "$WORK/out"; fail "not one job array"; }
wait_job "$JOB" 120
check_results "$WORK/sys/cmp.base.h5" 8
check_results "$WORK/sys/cmp.other.h5" 8
grep -q "launching env -u SLURM_NTASKS_PER_NODE srun --mpi=pmix" "$WORK"/sys/cmp.slurm-"$JOB"_1.out ||
  fail "the array task did not launch with srun"
echo "job array done after $((SECONDS - T0)) s"

found=$(find "$WORK" / -maxdepth 1 -name 'PWNED*' 2>/dev/null; find "$WORK" -name 'PWNED*')
[[ -z $found ]] || fail "a value was executed: $found"
stop_cluster
"$DEV_CLUSTER" status --dir "$CLUSTER" >/dev/null && fail "dev-cluster still running after stop"
echo "slurm submit test passed in $((SECONDS - T0)) s"
