#!/usr/bin/env bash
# End to end: run a sweep, read /runs with h5py into pandas the way the README says, check values
# against the conventions, draw a heat map, and resume without duplicates.
source "$(dirname "$0")/lib.sh"
out="$WORK/tiny.h5"
expect_exit 0 "$DNNSCAPE" run "$SPECS/tiny-fc.yaml" -o "$out" --plain-progress
grep -q "done: ran 8 configs (8 ok)" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "summary"; }
grep -q "results: $out" "$WORK/out" || fail "summary does not say where the file is"
grep -q "progress 100% 8/8" "$WORK/err" || { cat "$WORK/err"; fail "no progress lines"; }

"$PYTHON" - "$out" "$SPECS/tiny-fc.yaml" <<'PY'
import sys, hashlib, math
import h5py, pandas as pd
path, spec = sys.argv[1], sys.argv[2]
# The README's one-liner:
df = pd.DataFrame({k: (v[()].astype(str) if v.dtype.kind == "S" else v[()]) for k, v in h5py.File(path, "r")["runs"].items()})
assert len(df) == 8, len(df)
assert set(df.status) == {"ok"}, df.status.tolist()
assert df.config_id.is_unique
assert sorted(df.batch.unique()) == [8, 16]
assert (df.filters == -1).all() and (df.cell == "").all()
assert (df["mode"] == "training").all() and (df.dtype == "f32").all()
params = 20 * df.nodes + df.nodes + (df.layers - 1) * (df.nodes ** 2 + df.nodes) + df.nodes * 10 + 10
assert (df.params == params).all()
assert (abs(df.flops - 6 * df.batch * params) <= 1e-9 * df.flops).all()
assert (df.step_time_s > 0).all()
assert (df.step_time_ci_low_s <= df.step_time_s).all() and (df.step_time_s <= df.step_time_ci_high_s).all()
assert (abs(df.examples_per_s - df.batch / df.step_time_s) <= 1e-9 * df.examples_per_s).all()
assert (abs(df.gflops - df.flops / df.step_time_s / 1e9) <= 1e-9 * df.gflops).all()
assert (abs(df.arithmetic_intensity - df.flops / df.bytes) <= 1e-9 * df.arithmetic_intensity).all()
assert ((df.reps >= 6) & (df.reps <= 12)).all()
# What measuring each config took covers at least its timed repetitions, and not minutes.
assert ((df.wall_s >= df.reps * df.step_time_s) & (df.wall_s < 60)).all(), df[["reps", "step_time_s", "wall_s"]]
assert (df.flops_utilization > 0).all() and (df.flops_utilization < 1.5).all()
with h5py.File(path, "r") as f:
    assert f.attrs["schema"] in (b"dnnscape/1", "dnnscape/1")
    sha = f.attrs["spec_sha256"]
    sha = sha.decode() if isinstance(sha, bytes) else sha
    assert sha == hashlib.sha256(open(spec, "rb").read()).hexdigest()
    sysattrs = f["system"].attrs
    assert sysattrs["peak_gflops_f32"] > 0 and sysattrs["mem_bandwidth_gbs"] > 0
    assert sysattrs["logical_cpus"] >= 1
    rows = f["samples/row"][()]
    samples = f["samples/step_time_s"][()]
    # Every timed repetition is kept, and the median of a row's samples is its step time.
    for i, r in df.iterrows():
        mine = sorted(samples[rows == i])
        assert len(mine) == r.reps, (i, len(mine), r.reps)
        n = len(mine)
        med = mine[n // 2] if n % 2 else 0.5 * (mine[n // 2 - 1] + mine[n // 2])
        assert math.isclose(med, r.step_time_s, rel_tol=1e-12), (med, r.step_time_s)
print("h5py/pandas checks passed")
PY

expect_exit 0 "$DNNSCAPE" heatmap "$out" --x nodes --y batch --metric flops_utilization --facet layers -o "$WORK/plots"
for ext in svg png csv; do
  [[ -s "$WORK/plots/heatmap_flops_utilization_nodes_batch_by_layers.$ext" ]] || fail "heat map .$ext missing"
done
grep -q "layers = 2" "$WORK/plots/heatmap_flops_utilization_nodes_batch_by_layers.svg" || fail "facet panel title missing"
grep -q "fraction of measured peak" "$WORK/plots/heatmap_flops_utilization_nodes_batch_by_layers.svg" || fail "colour scale unit missing"
[[ $(wc -l <"$WORK/plots/heatmap_flops_utilization_nodes_batch_by_layers.csv") == 9 ]] || fail "heat map CSV rows"
expect_exit 2 "$DNNSCAPE" heatmap "$out" --x bogus

# Resume: the same command runs nothing new and duplicates nothing.
expect_exit 0 "$DNNSCAPE" run "$SPECS/tiny-fc.yaml" -o "$out" --plain-progress
grep -q "ran 0 configs" "$WORK/out" || { cat "$WORK/out"; fail "resume re-ran configs"; }
grep -q "8 were already recorded" "$WORK/out" || fail "resume summary"
"$PYTHON" -c "import h5py,sys; f=h5py.File(sys.argv[1],'r'); ids=f['runs/config_id'][()]; assert len(ids)==8 and len(set(ids))==8" "$out"

# A changed spec is refused unless --new-file, which keeps the old file aside.
sed 's/batch:  \[8, 16\]/batch:  [8, 16, 24]/' "$SPECS/tiny-fc.yaml" >"$WORK/changed.yaml"
expect_exit 2 "$DNNSCAPE" run "$WORK/changed.yaml" -o "$out"
grep -q "different spec" "$WORK/err" || { cat "$WORK/err"; fail "changed spec not refused clearly"; }
[[ $(wc -l <"$WORK/err") == 1 ]] || fail "changed-spec error is not one line"
expect_exit 0 "$DNNSCAPE" run "$WORK/changed.yaml" -o "$out" --new-file --plain-progress
grep -q "previous file was kept as" "$WORK/err" || fail "--new-file does not say where the old file went"
ls "$WORK"/tiny.*.h5 >/dev/null 2>&1 || fail "old file was not kept aside"
"$PYTHON" -c "import h5py,sys; assert len(h5py.File(sys.argv[1],'r')['runs/config_id']) == 12" "$out"
echo "end-to-end tests passed"
