#!/bin/bash
# dnnscape {{version}} batch job: a sweep as an MPI farm inside the allocation, that checkpoints and
# requeues itself ahead of the time limit. Rendered by `dnnscape submit`.
#
# A template may be copied and edited (`dnnscape submit --template FILE`). It must keep the sbatch
# placeholder before the first command (sbatch reads #SBATCH lines only up to there) and the
# settings placeholder before the variables it defines are used. Every value in those two blocks
# was quoted (or rejected) when the script was rendered; do not paste user values in by hand.
{{sbatch}}

set -uo pipefail

{{settings}}

utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }
json() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
say() { echo "dnnscape job $(utc): $*"; }
# One JSON line per event in the sidecar next to the results file: which job, which restart.
record() {
  printf '{"event":%s,"utc":%s,"job_id":%s,"array_job_id":%s,"array_task_id":%s,"restart_count":%s,"system":%s,"nodes":%s%s}\n' \
    "$(json "$1")" "$(json "$(utc)")" "$(json "${SLURM_JOB_ID:-}")" "$(json "${SLURM_ARRAY_JOB_ID:-}")" \
    "$(json "${SLURM_ARRAY_TASK_ID:-}")" "${SLURM_RESTART_COUNT:-0}" "$(json "$DNNSCAPE_SYSTEM")" \
    "$(json "${SLURM_JOB_NODELIST:-}")" "${2:-}" >>"$DNNSCAPE_SIDECAR"
}

restart=${SLURM_RESTART_COUNT:-0}
nodes=${SLURM_JOB_NUM_NODES:-1}
ranks=$((nodes * DNNSCAPE_WORKERS_PER_NODE + 1)) # rank 0 hands out work and writes the file
say "job ${SLURM_JOB_ID:-?} restart $restart on ${SLURM_JOB_NODELIST:-?}: system '$DNNSCAPE_SYSTEM', results $DNNSCAPE_OUT"
record start

# Per-rank environment: exported here, inherited by every rank (and passed explicitly to mpirun).
export DNNSCAPE_SLURM_JOB_ID=${SLURM_JOB_ID:-} DNNSCAPE_SLURM_RESTART_COUNT=$restart
export OMPI_MCA_mpi_yield_when_idle=1 # the master waits for results without spinning on a core

launcher=$DNNSCAPE_LAUNCHER
if [[ $launcher == auto ]]; then
  if command -v mpirun >/dev/null 2>&1; then
    launcher=mpirun
  elif srun --mpi=list 2>&1 | grep -qw pmix; then
    launcher=srun
  else
    say "neither mpirun nor srun --mpi=pmix is available on $(hostname)"
    record end ',"exit":1,"outcome":"no launcher"'
    exit 1
  fi
fi
case $launcher in
  mpirun)
    xs=()
    for v in "${DNNSCAPE_EXPORTS[@]}" DNNSCAPE_SLURM_JOB_ID DNNSCAPE_SLURM_RESTART_COUNT OMPI_MCA_mpi_yield_when_idle; do
      xs+=(-x "$v")
    done
    launch=(mpirun -np "$ranks" "${DNNSCAPE_MPIRUN_ARGS[@]}" "${xs[@]}") ;;
  srun) launch=(env -u SLURM_NTASKS_PER_NODE srun --mpi=pmix --ntasks="$ranks" --overcommit --kill-on-bad-exit=1 "${DNNSCAPE_SRUN_ARGS[@]}") ;;
  none) launch=() ;; # one process, no farm
  *) say "unknown launcher '$launcher'"; exit 1 ;;
esac

# Rank 0 (the master, which writes the file) runs on this node and leaves its pid here. Signals go
# to it alone: srun would signal every process of the step, executors included, and an executor
# killed mid-measurement would be recorded as a crashed config.
rank0_pidfile=${TMPDIR:-/tmp}/dnnscape-${SLURM_JOB_ID:-$$}-rank0.pid
rm -f "$rank0_pidfile"
rank_wrapper=(bash -c 'if [[ ${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}} == 0 ]]; then echo $$ >"$0"; fi; exec "$@"' "$rank0_pidfile")
signal_master() {
  local pid
  pid=$(cat "$rank0_pidfile" 2>/dev/null)
  [[ $pid =~ ^[0-9]+$ ]] && kill -"$1" "$pid" 2>/dev/null && return 0
  kill -"$1" "$step" 2>/dev/null # rank 0 is elsewhere: let the launcher pass it on
}

# Ahead of the time limit Slurm sends USR1 to this shell (--signal=B:USR1@grace). Pass it on: the
# master stops handing out work and waits for the running configs; whatever still runs after
# DNNSCAPE_ABANDON_AFTER_S is abandoned (the master is killed before it can record those configs,
# so they rerun after the restart). Then the job requeues itself if work remains.
stop=0 step="" watchdog=""
on_usr1() {
  ((stop)) && return
  stop=1
  say "USR1: stopping the sweep; running configs get ${DNNSCAPE_ABANDON_AFTER_S}s"
  [[ -n $step ]] || return
  signal_master USR1
  (sleep "$DNNSCAPE_ABANDON_AFTER_S"; kill -0 "$step" 2>/dev/null || exit 0
   echo "dnnscape job $(utc): abandoning the running configs"; signal_master KILL
   sleep 2; kill -TERM "$step" 2>/dev/null; sleep 10; kill -KILL "$step" 2>/dev/null) &
  watchdog=$!
}
on_term() { stop=1; say "TERM: stopping"; [[ -n $step ]] && kill -TERM "$step" 2>/dev/null; }
trap on_usr1 USR1
trap on_term TERM

say "launching ${launch[*]:-(single process)} $DNNSCAPE_BIN run ..."
# The step gets its own process group, so a signal meant for this shell's group (scancel --batch)
# reaches only the master, through signal_master, and never an executor.
set -m
"${launch[@]}" "${rank_wrapper[@]}" "$DNNSCAPE_BIN" run "$DNNSCAPE_SPEC" -o "$DNNSCAPE_OUT" --plain-progress &
step=$!
set +m
for _ in $(seq 50); do [[ -s $rank0_pidfile ]] && break; sleep 0.1; done
if ((stop)); then stop=0; on_usr1; fi # the signal came before the step existed
while :; do
  wait "$step"
  kill -0 "$step" 2>/dev/null || break # else a trapped signal interrupted the wait
done
wait "$step" 2>/dev/null
rc=$?
[[ -n $watchdog ]] && kill "$watchdog" 2>/dev/null
rm -f "$rank0_pidfile"

if ((rc == 0)); then
  say "the sweep is complete"
  record end ',"exit":0,"outcome":"complete"'
  exit 0
fi
if ((stop)); then
  if ((restart < DNNSCAPE_MAX_RESTARTS)); then
    say "stopped with work left (exit $rc): requeueing job $SLURM_JOB_ID (restart $((restart + 1)))"
    record end ",\"exit\":$rc,\"outcome\":\"requeued\""
    scontrol requeue "$SLURM_JOB_ID" && { sleep 60; exit 0; } # the requeue ends this shell
    say "scontrol requeue failed; resubmit the same command to resume"
  else
    say "stopped with work left after $restart restarts (the limit): resubmit the same command to resume"
  fi
  record end ",\"exit\":$rc,\"outcome\":\"stopped\""
  exit "$rc"
fi
say "the sweep failed (exit $rc)"
record end ",\"exit\":$rc,\"outcome\":\"failed\""
exit "$rc"
