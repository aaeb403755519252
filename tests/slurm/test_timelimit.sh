#!/usr/bin/env bash
# A sweep that cannot finish within its time limit (about 60 s of work, --time 00:01:00): Slurm's
# own USR1 ahead of the limit (--signal=B:USR1@20) makes it checkpoint, requeue itself and resume
# until it is complete, with every config exactly once and the restarts recorded. About 2 minutes.
source "$DNNSCAPE_SOURCE/tests/slurm/lib-slurm.sh"
T0=$SECONDS
start_cluster
submit "$DNNSCAPE_SOURCE/tests/slurm/specs/timelimit-fc.yaml" -o "$WORK/tl/out.h5" \
  --time 00:01:00 --grace 20 --workers-per-node 2 --mpirun-args="$MPIRUN_ARGS"
wait_job "$JOB" 400
log="$WORK/tl/out.slurm-$JOB.out"
check_results "$WORK/tl/out.h5" 64
grep -q "USR1: stopping the sweep" "$log" || { cat "$log"; fail "Slurm's USR1 never reached the job"; }
grep -q "requeueing job $JOB (restart 1)" "$log" || { cat "$log"; fail "the job did not requeue itself"; }
grep -q "^resuming .*configs already recorded" "$log" || { cat "$log"; fail "the restart did not resume"; }
grep -q "DUE TO TIME LIMIT" "$log" && { cat "$log"; fail "the job ran into its time limit"; }
restarts=$(scontrol show job "$JOB" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')
((restarts >= 1)) || fail "Slurm counts $restarts restarts"
grep -q "\"event\":\"start\".*\"restart_count\":$restarts" "$WORK/tl/out.slurm.jsonl" || fail "restart $restarts not recorded"
check_jobs "$WORK/tl/out.h5" "$JOB" "$restarts" || fail "/jobs does not record the job and its restarts"
grep -q '"outcome":"complete"' "$WORK/tl/out.slurm.jsonl" || fail "no complete event"
echo "time-limit test passed: $restarts restart(s) in $((SECONDS - T0)) s"
