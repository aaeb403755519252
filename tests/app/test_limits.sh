#!/usr/bin/env bash
# Containment: a config that outlives limits.timeout_s is recorded `timeout`, one whose real
# allocation exceeds the executor's memory budget `failed` with "memory" in its message, one whose
# predicted footprint exceeds memory_fraction `skipped`; the sweep goes on after each, and
# `dnnscape status` lists them as failures.
source "$(dirname "$0")/lib.sh"

# Timeout: 4 configs, the big one killed after 3 s, the others ok.
expect_exit 0 "$DNNSCAPE" run "$SPECS/timeout-fc.yaml" -o "$WORK/timeout.h5" --plain-progress --no-profile
grep -q "done: ran 4 configs (3 ok, 1 timeout)" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "timeout summary"; }
"$PYTHON" - "$WORK/timeout.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    r = f["runs"]
    rows = {(int(l), int(n)): (s.decode(), m.decode()) for l, n, s, m in
            zip(r["layers"][()], r["nodes"][()], r["status"][()], r["message"][()])}
st, msg = rows[(8, 2048)]
assert st == "timeout" and "timeout_s = 3" in msg, rows[(8, 2048)]
assert all(s == "ok" for k, (s, _) in rows.items() if k != (8, 2048)), rows
print("timeout:", msg)
PY

# Memory exhaustion: a 256 MiB budget (plus the executor's 1 GiB slack for stacks and arenas), a
# config that needs ~2.7 GB.
DNNSCAPE_EXECUTOR_MEMORY_LIMIT=$((256 * 1024 * 1024)) expect_exit 0 \
  "$DNNSCAPE" run "$SPECS/memory-fc.yaml" -o "$WORK/memory.h5" --plain-progress --no-profile
grep -q "done: ran 2 configs (1 failed, 1 ok)" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "memory summary"; }
"$PYTHON" - "$WORK/memory.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    r = f["runs"]
    rows = {int(l): (s.decode(), m.decode()) for l, s, m in
            zip(r["layers"][()], r["status"][()], r["message"][()])}
assert rows[6][0] == "failed" and "memory" in rows[6][1], rows[6]
assert rows[1][0] == "ok", rows[1]
print("memory:", rows[6][1])
PY
expect_exit 0 "$DNNSCAPE" status "$WORK/memory.h5"
grep -q "failures (1):" "$WORK/out" || { cat "$WORK/out"; fail "status lists the failure"; }
grep -q "memory" "$WORK/out" || fail "status shows the failure's message"

# The memory guard: predicted footprint over memory_fraction -> skipped, nothing allocated.
sed 's/memory_fraction: 0.7/memory_fraction: 0.00001/' "$SPECS/memory-fc.yaml" >"$WORK/guard.yaml"
expect_exit 0 "$DNNSCAPE" run "$WORK/guard.yaml" -o "$WORK/guard.h5" --plain-progress --no-profile
"$PYTHON" - "$WORK/guard.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    r = f["runs"]
    rows = {int(l): (s.decode(), m.decode()) for l, s, m in
            zip(r["layers"][()], r["status"][()], r["message"][()])}
assert rows[6][0] == "skipped" and "memory" in rows[6][1], rows[6]
print("guard:", rows[6][1])
PY
echo "limits test passed"
