#!/usr/bin/env bash
# A spec that changed is refused unless --extend, which adds only the new configs (never a
# duplicate row) and keeps the original spec in spec_history; SIGTERM stops a sweep gracefully
# with a message that says how to resume; `dnnscape status` follows a sweep while it runs.
source "$(dirname "$0")/lib.sh"

expect_exit 0 "$DNNSCAPE" run "$SPECS/tiny-fc.yaml" -o "$WORK/x.h5" --plain-progress
sed 's/batch:  \[8, 16\]/batch:  [8, 16, 32]/; s/name: tiny-fc/name: tiny-fc-grown/' "$SPECS/tiny-fc.yaml" >"$WORK/grown.yaml"
expect_exit 2 "$DNNSCAPE" run "$WORK/grown.yaml" -o "$WORK/x.h5" --plain-progress
grep -q "pass --extend" "$WORK/err" || { cat "$WORK/err"; fail "refusal names --extend"; }
expect_exit 2 "$DNNSCAPE" run "$WORK/grown.yaml" -o "$WORK/x.h5" --extend --new-file
expect_exit 0 "$DNNSCAPE" run "$WORK/grown.yaml" -o "$WORK/x.h5" --plain-progress --extend
grep -Eq "done: ran 4 configs \(4 ok\) in [0-9a-z]+; 8 were already recorded; 12 in the spec" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "extend ran only the new configs"; }
# The extended file resumes with the grown spec, without --extend.
expect_exit 0 "$DNNSCAPE" run "$WORK/grown.yaml" -o "$WORK/x.h5" --plain-progress
grep -q "ran 0 configs" "$WORK/out" || { cat "$WORK/out"; fail "resume after extend"; }
"$PYTHON" - "$WORK/x.h5" <<'PY'
import sys, json, h5py
with h5py.File(sys.argv[1], "r") as f:
    ids = f["runs/config_id"][()]
    assert len(ids) == 12 and len(set(ids)) == 12, len(ids)
    a = f.attrs
    assert a["spec_name"] in (b"tiny-fc-grown", "tiny-fc-grown"), a["spec_name"]
    history = json.loads(a["spec_history"])
    assert [h["name"] for h in history] == ["tiny-fc", "tiny-fc-grown"], history
    assert "batch:  [8, 16]" in history[0]["yaml"]
print("extend: 12 unique rows, spec_history keeps the original")
PY
expect_exit 0 "$DNNSCAPE" status "$WORK/x.h5" --json
"$PYTHON" -c "import json,sys; j=json.load(open('$WORK/out')); assert j['configs']['total']==12 and j['configs']['remaining']==0, j['configs']"

# SIGTERM in the middle: the running config finishes, the file is whole, the message says how to
# resume; status (while running and after) sees the remaining configs.
spec="$SPECS/slow-fc.yaml"
"$DNNSCAPE" run "$spec" -o "$WORK/s.h5" --plain-progress >"$WORK/s.out" 2>"$WORK/s.err" &
pid=$!
for _ in $(seq 1 600); do
  "$DNNSCAPE" status "$WORK/s.h5" --json >"$WORK/st.json" 2>/dev/null && \
    "$PYTHON" -c "import json,sys; j=json.load(open('$WORK/st.json')); sys.exit(0 if j['configs']['done'] >= 5 else 1)" && break
  sleep 0.1
done
"$PYTHON" -c "import json; j=json.load(open('$WORK/st.json')); assert j['running'] is True and j['configs']['remaining'] > 0 and j['eta_s'] > 0, j"
kill -TERM $pid
set +e; wait $pid; code=$?; set -e
[[ $code == 130 ]] || { cat "$WORK/s.out" "$WORK/s.err"; fail "exit $code after SIGTERM, wanted 130"; }
grep -q "To resume where it stopped, run the same command again" "$WORK/s.out" || { cat "$WORK/s.out"; fail "resume hint"; }
expect_exit 0 "$DNNSCAPE" status "$WORK/s.h5"
grep -q "no sweep writing it now" "$WORK/out" || { cat "$WORK/out"; fail "status after stop"; }
grep -Eq "[1-9][0-9]* remaining" "$WORK/out" || { cat "$WORK/out"; fail "status shows what remains"; }
expect_exit 0 "$DNNSCAPE" run "$spec" -o "$WORK/s.h5" --plain-progress
"$PYTHON" - "$WORK/s.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    ids = f["runs/config_id"][()]
    assert len(ids) == 64 and len(set(ids)) == 64, len(ids)
    assert all(s == b"ok" for s in f["runs/status"][()])
PY
echo "extend/stop test passed"
