#!/usr/bin/python3
"""Cross-checks `dnnscape regress` against statsmodels OLS on the same results file.

usage: statsmodels_check.py RESULTS.h5 REGRESS.json [--log] [--knobs a,b] [--interactions]

Rebuilds the design from the raw /runs columns independently of the C++ code (log2 parameters,
indicators for text parameters and knobs, z-scored features and metric, optional pairwise
products), fits statsmodels OLS with a constant per family panel and compares coefficients,
standard errors, confidence intervals, R-squared and adjusted R-squared to 1e-6 relative.
Exits 0 when everything agrees, 1 otherwise.
"""
import argparse
import itertools
import json
import sys

import h5py
import numpy as np
import statsmodels.api as sm

NUMERIC = ["layers", "nodes", "input", "output", "batch", "filters", "blocks", "image",
           "embedding", "length", "vocab"]
TEXT = ["block_fn", "cell"]


def column(runs, name):
    v = runs[name][()]
    if v.dtype.kind in "SO":
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in v])
    return v


def zscore(x):
    return (x - x.mean()) / x.std(ddof=1)


def design(runs, mask, knobs, interactions):
    names, cols, source = [], [], []
    var = 0
    for p in NUMERIC:
        v = column(runs, p)[mask].astype(float)
        if (v <= 0).all() or (v <= 0).any() or v.min() == v.max():
            continue
        names.append("log2 " + p)
        cols.append(np.log2(v))
        source.append(var)
        var += 1
    for p in TEXT + knobs:
        v = column(runs, p)[mask]
        if v.dtype.kind in "iuf":
            levels = sorted(set(v.tolist()))
            label = lambda x: str(int(x)) if float(x).is_integer() else repr(x)
        else:
            levels = sorted(set(v.tolist()))
            label = str
        if len(levels) < 2 or "" in levels:
            continue
        for lv in levels[1:]:
            names.append(f"{p}={label(lv)}")
            cols.append((v == lv).astype(float))
            source.append(var)
        var += 1
    cols = [zscore(c) for c in cols]
    if interactions:
        mains = len(cols)
        for a, b in itertools.combinations(range(mains), 2):
            if source[a] == source[b]:
                continue
            x = cols[a] * cols[b]
            if x.std(ddof=1) == 0:
                continue
            names.append(names[a] + ":" + names[b])
            cols.append(zscore(x))
    return names, np.column_stack(cols)


def close(a, b, what, errors, rel=1e-6):
    if not abs(a - b) <= rel * abs(b) + 1e-10:
        errors.append(f"{what}: dnnscape {a!r} vs statsmodels {b!r}")
    return abs(a - b) / max(abs(b), 1e-300)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("h5")
    ap.add_argument("json")
    ap.add_argument("--log", action="store_true")
    ap.add_argument("--knobs", default="")
    ap.add_argument("--interactions", action="store_true")
    ap.add_argument("--metric", default="flops_utilization")
    a = ap.parse_args()
    knobs = [k for k in a.knobs.split(",") if k]
    result = json.load(open(a.json))
    runs = h5py.File(a.h5, "r")["runs"]
    status = column(runs, "status")
    family = column(runs, "family")
    metric = column(runs, a.metric).astype(float)
    errors, worst, checked = [], 0.0, 0
    for panel in result["panels"]:
        mask = (status == "ok") & (family == panel["group"])
        y = metric[mask]
        if a.log:
            y = np.log(y)
        names, x = design(runs, mask, knobs, a.interactions)
        fit = sm.OLS(zscore(y), sm.add_constant(x)).fit()
        ci = fit.conf_int(0.05)
        terms = {t["name"]: t for t in panel["terms"]}
        if sorted(terms) != sorted(names):
            errors.append(f"{panel['group']}: terms {sorted(terms)} vs {sorted(names)}")
            continue
        if panel["n"] != int(mask.sum()):
            errors.append(f"{panel['group']}: n {panel['n']} vs {int(mask.sum())}")
        for i, name in enumerate(names, start=1):
            t = terms[name]
            for key, ref in (("coef", fit.params[i]), ("se", fit.bse[i]),
                             ("ci_low", ci[i][0]), ("ci_high", ci[i][1]), ("t", fit.tvalues[i])):
                worst = max(worst, close(t[key], ref, f"{panel['group']} {name} {key}", errors))
                checked += 1
        worst = max(worst, close(panel["r2"], fit.rsquared, f"{panel['group']} R2", errors))
        worst = max(worst, close(panel["adj_r2"], fit.rsquared_adj, f"{panel['group']} adj R2", errors))
        checked += 2
    print(f"statsmodels check: {checked} values, worst relative difference {worst:.3g}")
    for e in errors:
        print("MISMATCH", e)
    return 1 if errors or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
