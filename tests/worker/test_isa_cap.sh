#!/usr/bin/env bash
# isa_cap end to end: the sweep runs each cap in its own executor with ONEDNN_MAX_CPU_ISA, so the
# rows record different effective ISAs and the profiled ops different oneDNN implementations.
source "$DNNSCAPE_SOURCE/tests/app/lib.sh"
cat >"$WORK/isa.yaml" <<'YAML'
name: isa-cap
families:
  fc:  {layers: 1, nodes: 64, input: 32, output: 10, batch: 16}
  cnn: {block_fn: residual, filters: 4, blocks: 1, image: 32, output: 10, batch: 2}
knobs:
  dtype: [f32, bf16]
  isa_cap: [avx2, none]
  algorithm: [default, winograd]
sampling: grid
measure: {warmup_s: 0.01, min_reps: 6, max_reps: 6, target_ci: 0.5, max_time_s: 1}
limits: {memory_fraction: 0.7, timeout_s: 120}
YAML
expect_exit 0 "$DNNSCAPE" run "$WORK/isa.yaml" -o "$WORK/isa.h5" --plain-progress
avx512=$(grep -c avx512f /proc/cpuinfo || true)
"$PYTHON" - "$WORK/isa.h5" "$avx512" <<'PY'
import sys
import h5py, pandas as pd
f = h5py.File(sys.argv[1], "r")
has_avx512 = int(sys.argv[2]) > 0
table = lambda g: pd.DataFrame({k: (v[()].astype(str) if v.dtype.kind == "S" else v[()]) for k, v in f[g].items()})
runs, ops = table("runs"), table("ops")
impls = lambda row: set(ops[ops.row == row].impl)
f32 = runs[(runs.dtype == "f32") & (runs.algorithm == "default")]
assert (f32.status == "ok").all(), f32[["family", "isa_cap", "status", "message"]]
for fam in ("fc", "cnn"):
    capped = f32[(f32.family == fam) & (f32.isa_cap == "avx2")].iloc[0]
    free = f32[(f32.family == fam) & (f32.isa_cap == "none")].iloc[0]
    assert capped.effective_isa == "avx2", capped.effective_isa
    got = impls(capped.name)
    assert not any("avx512" in i for i in got), (fam, got)
    if has_avx512:
        assert free.effective_isa.startswith("avx512"), free.effective_isa
        assert impls(free.name) != got, (fam, impls(free.name), got)
        assert any("avx512" in i for i in impls(free.name)), (fam, impls(free.name))
    print(fam, "avx2:", sorted(got), "| none:", free.effective_isa, sorted(impls(free.name)))
bf = runs[(runs.dtype == "bf16") & (runs.isa_cap == "avx2") & (runs.family == "fc") & (runs.algorithm == "default")]
assert (bf.status == "skipped").all()
assert (bf.message.str.contains("isa_cap avx2 excludes them")).all(), bf.message.tolist()
# Winograd: per layer where oneDNN has it (avx512_core), nowhere under avx2 -> skipped, saying why.
wino = runs[(runs.family == "cnn") & (runs.algorithm == "winograd") & (runs.dtype == "f32")]
capped = wino[wino.isa_cap == "avx2"].iloc[0]
assert capped.status == "skipped" and "Winograd for none" in capped.message, capped.message
if has_avx512:
    free = wino[wino.isa_cap == "none"].iloc[0]
    assert free.status == "ok", free.message
    assert any("wino" in i for i in impls(free.name)), impls(free.name)
PY

# compare --by isa_cap inside the one file: a verdict with box plots.
expect_exit 0 "$DNNSCAPE" compare "$WORK/isa.h5" --by isa_cap --base avx2 --where 'dtype==f32 && algorithm==default' -o "$WORK/cmp"
grep -Eq "Verdict: .*(strictly better|conditionally better|no better)" "$WORK/out" || { cat "$WORK/out" "$WORK/err"; fail "compare --by isa_cap gave no verdict"; }
ls "$WORK"/cmp/compare_*.svg >/dev/null 2>&1 || fail "compare --by isa_cap drew no box plot"
grep -q "1.5" "$WORK"/cmp/compare_*.svg || fail "box plot does not state its whiskers"
echo "isa_cap test passed (with compare --by isa_cap)"
