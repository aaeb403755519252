#!/usr/bin/python3
"""The pandas + statsmodels side of bench_analysis, and its synthetic-file generator.

  bench_analysis_pandas.py make FILE N   grow FILE (a dnnscape/1 file written by ResultsWriter
                                         with its schema) to N /runs rows of synthetic FC data
  bench_analysis_pandas.py run FILE DIR  time regress, compare and report the pandas way;
                                         prints {"regress": s, "compare": s, "report": s}

The computations mirror the C++ ones (docs/analysis.md): the same design (log2 parameters,
dtype indicator, z-scored), statsmodels OLS with 95% CIs, 5-fold CV R², and the importance-ratio
bootstrap over the same 2048 random row units (1000 replicates); compare joins f32 and bf16
on the configuration, takes per-config speedups, per-family box statistics, the geometric mean
with a 1000-replicate bootstrap over 4096 units, a depth-2 decision tree on the log2 parameters
and writes the per-config CSV; report recomputes the heat-map cell medians, the regression,
roofline shares and the comparison and writes CSV tables and an HTML page. The pandas side draws
no figures (matplotlib is not among the project's packages); the C++ side renders every figure
with gnuplot, so the comparison is conservative for C++.
"""
import json
import sys
import time

import h5py
import numpy as np
import pandas as pd
import statsmodels.api as sm

NUMERIC = ["layers", "nodes", "input", "output", "batch", "filters", "blocks", "image",
           "embedding", "length", "vocab"]


def make(path, n):
    rng = np.random.default_rng(1)
    half = n // 2
    i = np.arange(half)
    layers = 1 + i % 64
    nodes = 32 * (1 + (i // 64) % 64)
    batch = 16 * (1 + (i // 4096) % 128)
    inp = rng.choice([2000, 8000], half)
    out = rng.choice([200, 1000], half)
    params = inp * nodes + (layers - 1) * nodes * nodes + nodes * out + layers * nodes + out
    flops = 6.0 * batch * params
    base = flops / 200e9 * np.exp(rng.normal(0, 0.1, half)) + 1e-5
    bf16 = base * np.where(batch >= 512, 0.55, 1.3) * np.exp(rng.normal(0, 0.05, half))
    rows = {}

    def both(a, b=None):
        v = np.empty(n, dtype=np.asarray(a).dtype)
        v[0::2] = a
        v[1::2] = a if b is None else b
        return v

    t = both(base, bf16)
    rows["layers"] = both(layers)
    rows["nodes"] = both(nodes)
    rows["input"] = both(inp)
    rows["output"] = both(out)
    rows["batch"] = both(batch)
    for p in ["filters", "blocks", "image", "embedding", "length", "vocab"]:
        rows[p] = np.full(n, -1, dtype=np.int64)
    rows["threads"] = np.zeros(n, dtype=np.int64)
    rows["step_time_s"] = t
    rows["step_time_ci_low_s"] = t * 0.99
    rows["step_time_ci_high_s"] = t * 1.01
    rows["step_time_cv"] = np.full(n, 0.01)
    rows["examples_per_s"] = rows["batch"] / t
    fl = both(flops)
    rows["flops"] = fl
    rows["gflops"] = fl / t / 1e9
    peak = np.where(np.arange(n) % 2 == 0, 300.0, 600.0)
    rows["flops_utilization"] = rows["gflops"] / peak
    by = both(4.0 * (3 * params + 4 * batch * nodes * layers))
    rows["bytes"] = by
    rows["arithmetic_intensity"] = fl / by
    rows["params"] = both(params.astype(float))
    rows["memory_bytes"] = by
    rows["reps"] = np.full(n, 9, dtype=np.int64)
    rows["rank"] = np.zeros(n, dtype=np.int64)
    rows["workers_on_host"] = np.ones(n, dtype=np.int64)
    text = {
        "config_id": np.char.mod("%016x", np.arange(n)).astype("S16"),
        "family": np.full(n, b"fc"),
        "mode": np.full(n, b"training"),
        "dtype": np.where(np.arange(n) % 2 == 0, b"f32", b"bf16"),
        "algorithm": np.full(n, b"default"),
        "isa_cap": np.full(n, b"none"),
        "status": np.full(n, b"ok"),
        "host": np.full(n, b"synthetic"),
        "effective_isa": np.full(n, b"avx512_core"),
        "finished_utc": np.full(n, b"2026-01-01T00:00:00Z"),
    }
    with h5py.File(path, "r+") as f:
        runs = f["runs"]
        for name in runs:
            d = runs[name]
            d.resize((n,))
            if name in rows:
                d[...] = rows[name].astype(d.dtype)
            elif name in text:
                d[...] = text[name].astype(d.dtype)
            elif d.dtype.kind == "S":
                d[...] = np.zeros(n, dtype=d.dtype)
            else:
                d[...] = np.full(n, np.nan if d.dtype.kind == "f" else 0, dtype=d.dtype)


def read(path, cols):
    with h5py.File(path, "r") as f:
        r = f["runs"]
        df = pd.DataFrame({c: (r[c][()].astype(str) if r[c].dtype.kind == "S" else r[c][()])
                           for c in cols})
    return df[df["status"] == "ok"]


def zscore(x):
    return (x - x.mean()) / x.std(ddof=1)


def regress(df, metric="flops_utilization", seed=1, reps=1000, units=2048):
    out = {}
    for fam, g in df.groupby("family"):
        cols, names = [], []
        for p in NUMERIC:
            v = g[p].to_numpy(dtype=float)
            if (v <= 0).any() or v.min() == v.max():
                continue
            cols.append(zscore(np.log2(v)))
            names.append("log2 " + p)
        levels = sorted(g["dtype"].unique())
        for lv in levels[1:]:
            cols.append(zscore((g["dtype"] == lv).to_numpy(dtype=float)))
            names.append("dtype=" + lv)
        X = np.column_stack(cols)
        y = zscore(g[metric].to_numpy(dtype=float))
        Xc = sm.add_constant(X)
        fit = sm.OLS(y, Xc).fit()
        ci = fit.conf_int(0.05)
        # 5-fold CV R².
        rng = np.random.default_rng(seed)
        unit = rng.permutation(len(y)) % units
        fold = unit % 5
        press = 0.0
        for k in range(5):
            tr = fold != k
            fk = sm.OLS(y[tr], Xc[tr]).fit()
            press += ((y[~tr] - Xc[~tr] @ fk.params) ** 2).sum()
        cv = 1 - press / ((y - y.mean()) ** 2).sum()
        # Importance-ratio bootstrap over the same units (per-unit Gram matrices).
        A = np.column_stack([Xc, y])
        order = np.argsort(unit, kind="stable")
        starts = np.searchsorted(unit[order], np.arange(units))
        grams = np.stack([A[idx].T @ A[idx] for idx in np.split(order, starts[1:])])
        coef = fit.params[1:]
        rank = np.argsort(-np.abs(coef))
        k = X.shape[1]
        ratios = []
        for r in range(reps):
            w = rng.multinomial(units, np.full(units, 1.0 / units))
            G = np.tensordot(w, grams, axes=1)
            nn = G[0, 0]
            m = G[0, 1:] / nn
            C = G[1:, 1:] - nn * np.outer(m, m)
            b = np.linalg.solve(C[:k, :k], C[:k, k])
            ratios.append([abs(b[rank[i]]) / abs(b[rank[i + 1]]) for i in range(min(k - 1, 5))])
        ratios = np.array(ratios)
        out[fam] = {"names": names, "coef": fit.params.tolist(), "se": fit.bse.tolist(),
                    "ci": ci.tolist(), "r2": fit.rsquared, "adj_r2": fit.rsquared_adj, "cv_r2": cv,
                    "ratio_ci": np.percentile(ratios, [2.5, 97.5], axis=0).tolist()}
    return out


def tree_rule(X, win, depth=2, min_leaf=1):
    """Depth-limited Gini CART on binned features, as the C++ side does it."""
    def best_split(idx):
        n, w = len(idx), win[idx].sum()
        best = (2 * w * (n - w) / n if n else 0.0, None, None)
        for j in range(X.shape[1]):
            vals, inv = np.unique(X[idx, j], return_inverse=True)
            cnt = np.bincount(inv, minlength=len(vals)).cumsum()
            wc = np.bincount(inv, weights=win[idx], minlength=len(vals)).cumsum()
            for b in range(len(vals) - 1):
                ln, lw = cnt[b], wc[b]
                rn, rw = n - ln, w - lw
                if ln < min_leaf or rn < min_leaf:
                    continue
                g = 2 * lw * (ln - lw) / ln + 2 * rw * (rn - rw) / rn
                if g < best[0] - 1e-9 * n:
                    best = (g, j, vals[b])
        return best

    def grow(idx, d):
        if d == depth or len(idx) == 0:
            return [(idx, win[idx].mean() > 0.5 if len(idx) else False)]
        _, j, t = best_split(idx)
        if j is None:
            return [(idx, win[idx].mean() > 0.5)]
        return grow(idx[X[idx, j] <= t], d + 1) + grow(idx[X[idx, j] > t], d + 1)

    leaves = grow(np.arange(len(win)), 0)
    correct = sum((win[i] == lab).sum() for i, lab in leaves)
    return correct / len(win)


def compare(df, outdir, seed=1, reps=1000, units=4096, metric="step_time_s"):
    key = ["family"] + NUMERIC + ["block_fn", "cell", "mode", "algorithm", "isa_cap", "threads"]
    a = df[df["dtype"] == "bf16"]
    b = df[df["dtype"] == "f32"]
    m = a.merge(b, on=key, suffixes=("_a", "_b"), how="outer", indicator=True)
    only_a = int((m["_merge"] == "left_only").sum())
    only_b = int((m["_merge"] == "right_only").sum())
    m = m[m["_merge"] == "both"]
    s = (m[metric + "_a"] / m[metric + "_b"]).to_numpy()
    noise_win = (m["step_time_ci_high_s_b"] < m["step_time_ci_low_s_a"]).to_numpy()
    ls = np.log(s)
    rng = np.random.default_rng(seed)
    unit = rng.permutation(len(s)) % units
    sums = np.bincount(unit, weights=ls, minlength=units)
    cnts = np.bincount(unit, minlength=units).astype(float)
    w = rng.multinomial(units, np.full(units, 1.0 / units), size=reps)
    boot = np.exp((w @ sums) / (w @ cnts))
    fam = pd.DataFrame({"family": m["family"].to_numpy(), "s": s})
    box = fam.groupby("family")["s"].describe(percentiles=[0.25, 0.5, 0.75])
    feats = [np.log2(m[p].to_numpy(dtype=float)) for p in NUMERIC if (m[p] > 0).all() and m[p].nunique() > 1]
    acc = tree_rule(np.column_stack(feats), noise_win.astype(float), 2, max(1, len(s) // 100))
    pd.DataFrame({"config_id": m["config_id_a"].to_numpy(), "family": m["family"].to_numpy(),
                  "a": m[metric + "_b"].to_numpy(), "b": m[metric + "_a"].to_numpy(),
                  "speedup": s}).to_csv(f"{outdir}/pandas_compare_configs.csv", index=False)
    box.to_csv(f"{outdir}/pandas_compare_families.csv")
    return {"matched": len(s), "only_a": only_a, "only_b": only_b,
            "geomean": float(np.exp(ls.mean())), "ci": np.percentile(boot, [2.5, 97.5]).tolist(),
            "losses": int((s < 1).sum()), "tree_accuracy": acc}


def report(path, outdir):
    cols = (["status", "family", "dtype", "config_id", "flops_utilization", "step_time_s",
             "step_time_ci_low_s", "step_time_ci_high_s", "arithmetic_intensity", "gflops",
             "block_fn", "cell", "mode", "algorithm", "isa_cap", "threads"] + NUMERIC)
    df = read(path, cols)
    with h5py.File(path, "r") as f:
        sysattrs = dict(f["system"].attrs)
    summary = df.groupby("family")["flops_utilization"].describe()
    heat = df.groupby(["layers", "nodes", "batch"])["flops_utilization"].median()
    heat.to_csv(f"{outdir}/pandas_heatmap.csv")
    reg = regress(df)
    ridge = float(sysattrs["peak_gflops_f32"]) / float(sysattrs["mem_bandwidth_gbs"])
    mem_share = float((df["arithmetic_intensity"] < ridge).mean())
    cmp = compare(df, outdir)
    with open(f"{outdir}/pandas_report.html", "w") as f:
        f.write("<html><body>" + summary.to_html() + f"<p>{json.dumps(reg)[:2000]}</p>"
                f"<p>memory-bound share {mem_share}</p><p>{json.dumps(cmp)}</p></body></html>")


def run(path, outdir):
    times = {}
    t0 = time.perf_counter()
    df = read(path, ["status", "family", "dtype", "flops_utilization"] + NUMERIC)
    regress(df)
    times["regress"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    df = read(path, ["status", "family", "dtype", "config_id", "step_time_s", "step_time_ci_low_s",
                     "step_time_ci_high_s", "block_fn", "cell", "mode", "algorithm", "isa_cap",
                     "threads"] + NUMERIC)
    compare(df, outdir)
    times["compare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report(path, outdir)
    times["report"] = time.perf_counter() - t0
    print(json.dumps(times))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        run(sys.argv[2], sys.argv[3])
