#!/usr/bin/env bash
# The CLI's contract for bad input: one line on stderr, exit code 2, nothing written.
source "$(dirname "$0")/lib.sh"

expect_exit 0 "$DNNSCAPE" --help
grep -q "plan SPEC" "$WORK/out" || fail "--help does not list plan"
expect_exit 2 "$DNNSCAPE"
expect_exit 2 "$DNNSCAPE" frobnicate
[[ $(wc -l <"$WORK/err") == 1 ]] || fail "unknown command: not one line"
grep -q "unknown command 'frobnicate'" "$WORK/err" || fail "unknown command message"

for cmd in plan run peak heatmap; do
  expect_exit 0 "$DNNSCAPE" $cmd --help
  grep -qi "options" "$WORK/out" || fail "$cmd --help has no options section"
done

# Malformed specs: one line FILE:LINE:COL: message, exit 2, no results file.
cat >"$WORK/bad.yaml" <<'YAML'
name: bad
families:
  fc:
    layers: {log2: [128, 4]}
    nodes: 64
    input: 10
    output: 10
    batch: 8
YAML
expect_exit 2 "$DNNSCAPE" run "$WORK/bad.yaml" -o "$WORK/bad.h5"
[[ $(wc -l <"$WORK/err") == 1 ]] || { cat "$WORK/err"; fail "spec error is not one line"; }
grep -q "^$WORK/bad.yaml:4:[0-9]*: families.fc.layers" "$WORK/err" || { cat "$WORK/err"; fail "spec error lacks FILE:LINE:COL and key"; }
[[ ! -e "$WORK/bad.h5" ]] || fail "a results file was written for a bad spec"
expect_exit 2 "$DNNSCAPE" plan "$WORK/bad.yaml"
[[ $(wc -l <"$WORK/err") == 1 ]] || fail "plan: spec error is not one line"

printf 'name: x\nfamilies:\n  mlp:\n    layers: 1\n' >"$WORK/unknown.yaml"
expect_exit 2 "$DNNSCAPE" plan "$WORK/unknown.yaml"
grep -q "^$WORK/unknown.yaml:3:3: " "$WORK/err" || { cat "$WORK/err"; fail "unknown family position"; }

expect_exit 2 "$DNNSCAPE" run "$SPECS/tiny-fc.yaml"
grep -q "needs -o" "$WORK/err" || fail "run without -o"
expect_exit 2 "$DNNSCAPE" run "$SPECS/tiny-fc.yaml" -o "$WORK/x.h5" --bogus
[[ $(wc -l <"$WORK/err") == 1 ]] || fail "unknown option: not one line"
expect_exit 1 "$DNNSCAPE" plan "$WORK/missing.yaml"
grep -q "missing.yaml" "$WORK/err" || fail "missing spec not named"
expect_exit 2 "$DNNSCAPE" heatmap "$WORK/missing.h5"

# plan: counts and JSON.
expect_exit 0 "$DNNSCAPE" plan "$SPECS/tiny-fc.yaml" --json
"$PYTHON" - "$WORK/out" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
assert p["configs"] == 8, p["configs"]
assert p["families"]["fc"]["configs"] == 8
# Model FLOPs: training 6 * batch * params summed over the grid.
total = 0
for layers in (1, 2):
    for nodes in (16, 32):
        params = 20 * nodes + nodes + (layers - 1) * (nodes * nodes + nodes) + nodes * 10 + 10
        for batch in (8, 16):
            total += 6 * batch * params
assert abs(p["total_flops"] - total) < 1e-6 * total, (p["total_flops"], total)
assert len(p["config_ids"]) == 8 and len(set(p["config_ids"])) == 8
PY
expect_exit 0 "$DNNSCAPE" plan "$SPECS/tiny-fc.yaml"
grep -q "^fc " "$WORK/out" || fail "plan table has no fc row"
# plan with configs that would be skipped (rnn decomposed has no bf16: its counts are NaN): the
# totals cover the configs that run and stay numbers.
cat >"$WORK/skips.yaml" <<'YAML'
name: skips
families:
  rnn: {cell: lstm, layers: 1, length: 4, embedding: 16, vocab: 50, batch: 4}
knobs: {mode: [training], dtype: [f32, bf16], algorithm: [fused, decomposed]}
YAML
expect_exit 0 "$DNNSCAPE" plan "$WORK/skips.yaml" --json
"$PYTHON" - "$WORK/out" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
assert p["configs"] == 4 and len(p["skipped"]) >= 1, p["skipped"]
runnable = p["families"]["rnn"]["runnable"]
assert runnable == 4 - len(p["skipped"])
assert isinstance(p["total_flops"], float) and p["total_flops"] > 0, p["total_flops"]
assert isinstance(p["estimated_time_s"], float) and p["estimated_time_s"] > 0
assert abs(p["families"]["rnn"]["flops"] - p["total_flops"]) <= 1e-9 * p["total_flops"]
PY
expect_exit 0 "$DNNSCAPE" plan "$WORK/skips.yaml"
grep -q "nan" "$WORK/out" && { cat "$WORK/out"; fail "plan prints nan"; }
# A peak far below what the configs reach (a cache measured on a busy machine): run warns once.
"$DNNSCAPE" peak --json >"$WORK/peak.json"
"$PYTHON" - "$WORK/peak.json" "$WORK/low-peak.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
p["gflops_f32"] = p["gflops_f32_1core"] = 0.01
json.dump(p, open(sys.argv[2], "w"))
PY
DNNSCAPE_PEAK_CACHE="$WORK/low-peak.json" expect_exit 0 "$DNNSCAPE" run "$SPECS/tiny-fc.yaml" -o "$WORK/low.h5" --plain-progress
grep -q "^warning: the utilization of the executed FLOPs reaches .*dnnscape peak --force" "$WORK/err" || { cat "$WORK/err"; fail "no warning about a low peak"; }
expect_exit 0 "$DNNSCAPE" run "$SPECS/tiny-fc.yaml" -o "$WORK/normal.h5" --plain-progress
grep -q "warning: the utilization of the executed" "$WORK/err" && { cat "$WORK/err"; fail "warning with a sane peak"; }
echo "cli tests passed"
