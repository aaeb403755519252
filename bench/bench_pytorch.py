#!/usr/bin/python3
"""dnnscape vs PyTorch: the same models, the same threads, batch and measurement rule, one run.

For each config of a fixed set (a few per family and mode) the bench runs `dnnscape run` on a
one-config spec and reads `step_time_s` from the results file, then times the same model written
the way a PyTorch user would (bench/pytorch_models.py) with the same stopping rule, and prints
ratio = PyTorch step / dnnscape step (> 1: dnnscape is faster), the geometric mean overall and
per family, and for every config where dnnscape is slower its /ops profile.

    /usr/bin/python3 bench/bench_pytorch.py --dnnscape build/bin/dnnscape [--threads N] [--quick]

Needs Debian's python3-torch and python3-h5py (`apt-get install -y python3-torch python3-h5py
python3-yaml`; use /usr/bin/python3). See bench/README.md and docs/pytorch-comparison.md.

Fairness:
- threads: dnnscape gets `knobs.threads: N` (its executor runs with OMP_NUM_THREADS=N);
  PyTorch gets torch.set_num_threads(N) and OMP_NUM_THREADS=N before torch is imported.
- measurement: the rule of worker/measure.cpp, re-implemented below: warm-up of at least one step
  and at least warmup_s; then each step timed on its own (a monotonic clock) until the 95% CI of
  the median (order statistics, ranks floor((n-1.96 sqrt n)/2) and ceil(1+(n+1.96 sqrt n)/2),
  n >= 6) lies within target_ci of the median and n >= min_reps, or max_reps, or max_time_s.
  Both sides report the median.
- floating point: both sides flush denormals to zero (dnnscape's executor sets FTZ/DAZ;
  torch.set_flush_denormal(True) here).
- BLAS: OpenBLAS's OpenMP build with the kernel OpenBLAS picks for this CPU (OPENBLAS_CORETYPE /
  OPENBLAS_L2_SIZE from the environment are dropped unless --keep-openblas-env), checked against
  a BLAS-free product; the kernel is printed.
- work: both prune the gradient of the input data (dnnscape runs no backward-data pass for the
  first FC layer or the CNN stem; PyTorch computes no gradient for inputs).
- interleaving: dnnscape config k then PyTorch config k (the order flips every config), so the
  load of a shared machine hits both alike; the 1-minute load average is printed per config.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# ----------------------------------------------------------------------------------- configs
# (label, family, params). Each runs in both modes. Small layers and small batches are where
# framework overhead dominates; fc-large is the GEMM-bound bench config of bench/bench_fc.cpp.
FULL = [
    ("fc-small", "fc", dict(layers=2, nodes=256, input=512, output=100, batch=64)),
    ("fc-medium", "fc", dict(layers=4, nodes=1024, input=2000, output=1000, batch=256)),
    ("fc-large", "fc", dict(layers=4, nodes=4096, input=2000, output=1000, batch=1024)),
    ("cnn-res-f16-b1", "cnn", dict(block_fn="residual", filters=16, blocks=1, image=100,
                                   output=1000, batch=16)),
    ("cnn-res-f32-b2", "cnn", dict(block_fn="residual", filters=32, blocks=2, image=100,
                                   output=1000, batch=64)),
    ("cnn-bot-f16-b1", "cnn", dict(block_fn="bottleneck", filters=16, blocks=1, image=100,
                                   output=1000, batch=32)),
    ("rnn-lstm-l1-e128", "rnn", dict(cell="lstm", layers=1, embedding=128, length=10,
                                     vocab=1024, batch=64)),
    ("rnn-gru-l2-e256", "rnn", dict(cell="gru", layers=2, embedding=256, length=20,
                                    vocab=4096, batch=64)),
    ("rnn-rnn-l2-e512", "rnn", dict(cell="rnn", layers=2, embedding=512, length=50,
                                    vocab=8192, batch=64)),
    ("rnn-lstm-l1-e512", "rnn", dict(cell="lstm", layers=1, embedding=512, length=50,
                                     vocab=8192, batch=64)),
]
QUICK_LABELS = ["fc-small", "fc-large", "cnn-res-f16-b1", "cnn-bot-f16-b1", "rnn-lstm-l1-e128",
                "rnn-gru-l2-e256"]
MODES = ["training", "inference"]

MEASURE_FULL = dict(warmup_s=0.2, min_reps=5, max_reps=200, target_ci=0.02, max_time_s=3.0)
MEASURE_QUICK = dict(warmup_s=0.1, min_reps=5, max_reps=100, target_ci=0.03, max_time_s=1.0)


# ------------------------------------------------------------------------------- measurement
def median_ci(samples: list[float]) -> tuple[float, float, float]:
    """Median and its 95% CI from order statistics (worker/measure.cpp median_ci)."""
    s = sorted(samples)
    n = len(s)
    med = s[n // 2] if n % 2 == 1 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    if n < 6:
        return med, s[0], s[-1]
    half = 1.96 * math.sqrt(n)
    lo = min(max(math.floor((n - half) / 2.0), 1), n)
    hi = min(max(math.ceil(1.0 + (n + half) / 2.0), 1), n)
    return med, s[lo - 1], s[hi - 1]


def measure_steps(step, m: dict) -> dict:
    """worker/measure.cpp measure_steps, line for line."""
    clock = time.perf_counter  # CLOCK_MONOTONIC, like std::chrono::steady_clock
    warm = 0
    w0 = clock()
    while True:
        step()
        warm += 1
        if clock() - w0 >= m["warmup_s"]:
            break
    samples: list[float] = []
    min_reps = max(m["min_reps"], 1)
    max_reps = max(m["max_reps"], 1)
    converged = False
    start = clock()
    while True:
        t0 = clock()
        step()
        samples.append(clock() - t0)
        n = len(samples)
        if n >= min_reps and n >= 6:
            med, lo, hi = median_ci(samples)
            if max(med - lo, hi - med) <= m["target_ci"] * med:
                converged = True
                break
        if n >= max_reps:
            break
        if clock() - start >= m["max_time_s"] and n >= min(min_reps, 2):
            break
    med, lo, hi = median_ci(samples)
    return dict(step_time_s=med, ci_low_s=lo, ci_high_s=hi, reps=len(samples),
                warmup_steps=warm, converged=converged)


# ---------------------------------------------------------------------------------- dnnscape
def spec_yaml(family: str, params: dict, mode: str, threads: int, m: dict) -> str:
    fam = "\n".join(f"    {k}: {v}" for k, v in params.items())
    meas = ", ".join(f"{k}: {v}" for k, v in m.items())
    return (f"name: bench-pytorch\nfamilies:\n  {family}:\n{fam}\n"
            f"knobs:\n  mode: [{mode}]\n  dtype: [f32]\n  threads: [{threads}]\n"
            f"sampling: grid\nmeasure: {{{meas}}}\nlimits: {{memory_fraction: 0.7, timeout_s: 600}}\n")


def _col(g, name, i):
    v = g[name][i]
    return v.decode() if isinstance(v, bytes) else v


def run_dnnscape(exe: str, workdir: Path, label: str, family: str, params: dict, mode: str,
                 threads: int, m: dict) -> dict:
    import h5py
    spec = workdir / f"{label}-{mode}.yaml"
    out = workdir / f"{label}-{mode}.h5"
    spec.write_text(spec_yaml(family, params, mode, threads, m))
    if out.exists():
        out.unlink()
    proc = subprocess.run([exe, "run", str(spec), "-o", str(out), "--plain-progress"],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"dnnscape run {spec} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    with h5py.File(out, "r") as f:
        runs = f["runs"]
        status = _col(runs, "status", 0)
        if status != "ok":
            raise RuntimeError(f"dnnscape {label} {mode}: status {status}: "
                               f"{_col(runs, 'message', 0)}")
        r = dict(step_time_s=float(runs["step_time_s"][0]),
                 ci_low_s=float(runs["step_time_ci_low_s"][0]),
                 ci_high_s=float(runs["step_time_ci_high_s"][0]),
                 reps=int(runs["reps"][0]), params=float(runs["params"][0]),
                 gflops=float(runs["gflops"][0]), flops=float(runs["flops"][0]),
                 message=_col(runs, "message", 0), file=str(out))
        ops = f["ops"]
        r["ops"] = [dict(row=int(ops["row"][i]), layer=int(ops["layer"][i]),
                         op=_col(ops, "op", i), phase=_col(ops, "phase", i),
                         time_s=float(ops["time_s"][i]), impl=_col(ops, "impl", i))
                    for i in range(len(ops["row"]))]
        r["system"] = {k: (v.decode() if isinstance(v, bytes) else
                           (v.item() if hasattr(v, "item") else v))
                       for k, v in f["system"].attrs.items()}
    return r


# ----------------------------------------------------------------------------------- pytorch
def run_pytorch(family: str, params: dict, mode: str, m: dict) -> dict:
    import gc
    import pytorch_models
    w = pytorch_models.build(family, params, mode)
    if w.torch_params != w.dnnscape_params:
        raise RuntimeError(f"shape mismatch: PyTorch {w.torch_params} params, dnnscape "
                           f"convention {w.dnnscape_params}")
    r = measure_steps(w.step, m)
    r["params"] = w.dnnscape_params
    r["note"] = w.note
    del w
    gc.collect()
    return r


REFERENCE_BLAS_DIR = "/usr/lib/x86_64-linux-gnu/blas"
OPENBLAS_DIRS = ["/usr/lib/x86_64-linux-gnu/openblas-openmp",
                 "/usr/lib/x86_64-linux-gnu/openblas-pthread"]


def choose_blas(mode: str, keep_env: bool) -> None:
    """Debian's python3-torch is built with BLAS_INFO=generic: it calls whatever libblas.so.3 the
    alternatives system points at, which is the netlib reference BLAS unless an optimized one is
    installed (~6 GFLOP/s vs ~200 for OpenBLAS on a 2048^3 product here: a comparison against it
    would be meaningless). `auto`: if libblas.so.3 resolves to the reference BLAS and OpenBLAS
    (libopenblas0-openmp, the OpenMP build, which shares PyTorch's thread pool) is installed,
    re-exec with OpenBLAS first on LD_LIBRARY_PATH; `system`: take what the system gives.

    OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when the environment sets them (some machines pin
    OpenBLAS to older kernels, e.g. Haswell = AVX2, to dodge bugs of old builds), would hand
    PyTorch half the FMA width dnnscape gets from oneDNN: unless --keep-openblas-env, the bench
    re-execs without them, lets OpenBLAS pick its kernel for this CPU, prints the kernel and checks
    a product against a BLAS-free reference (blas_sanity)."""
    if os.environ.get("BENCH_PYTORCH_BLAS_CHOSEN"):
        return
    os.environ["BENCH_PYTORCH_BLAS_CHOSEN"] = "1"
    restart = False
    if not keep_env:
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if os.environ.pop(k, None) is not None:
                restart = True
    sysblas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    if mode != "system" and not (mode == "auto" and not sysblas.startswith(REFERENCE_BLAS_DIR)):
        for d in OPENBLAS_DIRS:
            if os.path.exists(os.path.join(d, "libblas.so.3")):
                ld = os.environ.get("LD_LIBRARY_PATH", "")
                os.environ["LD_LIBRARY_PATH"] = d + (":" + ld if ld else "")
                restart = True
                break
        else:
            print("WARNING: PyTorch would use the reference BLAS (netlib); install "
                  "libopenblas0-openmp for a meaningful comparison", file=sys.stderr)
    if restart:
        os.execv(sys.executable, [sys.executable] + sys.argv)


def openblas_core() -> str:
    """The kernel family OpenBLAS chose (openblas_get_corename), or why it is unknown."""
    import ctypes
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if "libopenblas" in path.rsplit("/", 1)[-1]:
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                return lib.openblas_get_corename().decode()
            except (OSError, AttributeError) as e:
                return f"unknown ({e})"
    return "not OpenBLAS"


def blas_sanity() -> str:
    """A 256x300 @ 300x200 f32 product through BLAS against the same product summed by ATen's
    element-wise kernels (no BLAS involved); raises if they disagree."""
    import torch
    g = torch.Generator().manual_seed(7)
    a = torch.rand(256, 300, generator=g) - 0.5
    b = torch.rand(300, 200, generator=g) - 0.5
    ref = (a.double()[:, :, None] * b.double()[None, :, :]).sum(1)
    err = (torch.mm(a, b).double() - ref).abs().max().item()
    if not err < 1e-3:
        raise SystemExit(f"bench_pytorch: BLAS product wrong by {err:g} (kernel {openblas_core()}); "
                         "rerun with --keep-openblas-env")
    return f"max abs error {err:.1e} vs a BLAS-free reference"


def loaded_blas() -> str:
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "blas" in line.rsplit("/", 1)[-1] and line.split()[-1].startswith("/")})
    return ", ".join(libs) or "none loaded"


def torch_backend_info() -> list[str]:
    import torch
    lines = [f"BLAS loaded by PyTorch: {loaded_blas()}; OpenBLAS kernel {openblas_core()} "
             f"({'OPENBLAS_CORETYPE=' + os.environ['OPENBLAS_CORETYPE'] if 'OPENBLAS_CORETYPE' in os.environ else 'chosen by OpenBLAS for this CPU'}); "
             f"product check: {blas_sanity()}",
             f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
             f"interop threads {torch.get_num_interop_threads()}",
             f"torch.backends.mkldnn.is_available(): {torch.backends.mkldnn.is_available()}, "
             f"mkl: {torch.backends.mkl.is_available()}, "
             f"openmp: {torch.backends.openmp.is_available()}"]
    cfg = torch.__config__.show()
    for line in cfg.splitlines():
        s = line.strip()
        if s.startswith("- Build settings:"):
            keep = [kv.strip() for kv in s.split(":", 1)[1].split(",")
                    if kv.strip().split("=")[0] in ("BLAS_INFO", "LAPACK_INFO", "USE_MKLDNN",
                                                    "USE_OPENMP", "TORCH_VERSION")]
            lines.append("- Build settings (excerpt): " + ", ".join(keep))
        elif any(k in s for k in ("BLAS", "MKL-DNN", "oneDNN", "CPU capability", "OpenMP")):
            lines.append(s)
    return lines


# -------------------------------------------------------------------------------------- main
def geomean(xs):
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def median(xs):
    xs = sorted(x for x in xs if math.isfinite(x))
    if not xs:
        return float("nan")
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def loadavg() -> float:
    return os.getloadavg()[0]


def print_ops(ops: list[dict], step_s: float, top: int) -> None:
    total = sum(o["time_s"] for o in ops)
    print(f"      /ops: {len(ops)} ops, sum {total * 1e3:.2f} ms (step {step_s * 1e3:.2f} ms)")
    print(f"      {'layer':>5} {'op':<14} {'phase':<17} {'time_ms':>9} {'share':>6}  impl")
    for o in sorted(ops, key=lambda o: -o["time_s"])[:top]:
        print(f"      {o['layer']:>5} {o['op']:<14} {o['phase']:<17} {o['time_s'] * 1e3:>9.3f} "
              f"{o['time_s'] / step_s:>6.1%}  {o['impl']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dnnscape", required=True, help="path of the dnnscape binary")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for both sides (default: every CPU of the affinity mask)")
    ap.add_argument("--quick", action="store_true",
                    help=f"configs {', '.join(QUICK_LABELS)}, shorter measurement (~3 min)")
    ap.add_argument("--only", default="", help="comma-separated config labels to run")
    ap.add_argument("--modes", default=",".join(MODES), help="training,inference")
    ap.add_argument("--max-time-s", type=float, help="override measure.max_time_s")
    ap.add_argument("--rounds", type=int,
                    help="passes over the whole set (default 2, --quick 1); each side's time is "
                         "the median of its round medians, the ratio the median of the "
                         "per-round ratios")
    ap.add_argument("--ops", action="store_true",
                    help="print the /ops profile of every config, not only the slower ones")
    ap.add_argument("--top-ops", type=int, default=12, help="ops listed per profile")
    ap.add_argument("--json", help="write every result (incl. /ops) to this JSON file")
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment (by default "
                         "they are dropped so OpenBLAS uses this CPU's best kernel)")
    ap.add_argument("--blas", choices=["auto", "openblas", "system"], default="auto",
                    help="BLAS for PyTorch (default auto: OpenBLAS if the system BLAS is the "
                         "reference one)")
    ap.add_argument("--workdir", help="keep the specs and .h5 files here (default: a temp dir)")
    args = ap.parse_args()

    choose_blas(args.blas, args.keep_openblas_env)
    threads = args.threads if args.threads > 0 else len(os.sched_getaffinity(0))
    # Before torch starts its OpenMP runtime: the same pool size dnnscape's executor gets.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    torch.set_num_threads(threads)
    # dnnscape's executor flushes denormals to zero (docs/measurement.md); so does PyTorch here.
    torch.set_flush_denormal(True)

    exe = str(Path(args.dnnscape).resolve())
    m = dict(MEASURE_QUICK if args.quick else MEASURE_FULL)
    if args.max_time_s:
        m["max_time_s"] = args.max_time_s
    configs = FULL
    if args.quick:
        configs = [c for c in FULL if c[0] in QUICK_LABELS]
    if args.only:
        want = args.only.split(",")
        configs = [c for c in FULL if c[0] in want]
        if len(configs) != len(want):
            ap.error(f"--only: unknown label among {want}; known: {[c[0] for c in FULL]}")
    modes = args.modes.split(",")
    rounds = args.rounds or (1 if args.quick else 2)

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_pytorch_")
        workdir = Path(tmp.name)

    print(f"bench_pytorch: {len(configs)} configs x {len(modes)} modes x {rounds} rounds, "
          f"threads {threads}, measure {m}")
    for line in torch_backend_info():
        print("  " + line)
    print(f"  load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ncpu = len(os.sched_getaffinity(0))
    if threads > 1 and loadavg() + threads > ncpu + 0.5:
        print(f"  WARNING: load average {loadavg():.1f} + {threads} threads > {ncpu} CPUs: "
              f"every OpenMP barrier may wait for a preempted thread (a scheduler time slice, "
              f"milliseconds), which swamps small steps on both sides. On a shared machine "
              f"compare with --threads 1.")
    sys.stdout.flush()

    # rounds[r][(label, mode)] = {"dnnscape": ..., "pytorch": ..., "load1": ...}
    per: dict[tuple, list[dict]] = {}
    t_start = time.time()
    k = 0
    for rnd in range(rounds):
        if rounds > 1:
            print(f" round {rnd + 1}/{rounds}")
        for label, family, params in configs:
            for mode in modes:
                load0 = loadavg()
                sides = {}
                # Flip the order every config (and every round for the same config).
                order = ["dnnscape", "pytorch"] if k % 2 == 0 else ["pytorch", "dnnscape"]
                for side in order:
                    try:
                        if side == "dnnscape":
                            sides[side] = run_dnnscape(exe, workdir, f"{label}-r{rnd}", family,
                                                       params, mode, threads, m)
                        else:
                            sides[side] = run_pytorch(family, params, mode, m)
                    except Exception as e:  # noqa: BLE001 - report and go on
                        sides[side] = dict(error=str(e), step_time_s=float("nan"))
                k += 1
                d, p = sides["dnnscape"], sides["pytorch"]
                ratio = p["step_time_s"] / d["step_time_s"]
                per.setdefault((label, family, mode), []).append(
                    dict(round=rnd, order=order, load1=load0, ratio=ratio, dnnscape=d, pytorch=p))
                for side in ("dnnscape", "pytorch"):
                    if "error" in sides[side]:
                        print(f"  ! {label} {mode} {side}: {sides[side]['error']}")
                print(f"  {label:<18} {mode:<9} dnnscape {d['step_time_s'] * 1e3:9.3f} ms "
                      f"(n {d.get('reps', 0):3d})  pytorch {p['step_time_s'] * 1e3:9.3f} ms "
                      f"(n {p.get('reps', 0):3d})  ratio {ratio:5.2f}  load {load0:.2f}")
                sys.stdout.flush()
    elapsed = time.time() - t_start

    # Per config-mode: each side's step time is the median over rounds of its round medians.
    results = []
    for (label, family, mode), rs in per.items():
        dt = median([r["dnnscape"]["step_time_s"] for r in rs])
        pt = median([r["pytorch"]["step_time_s"] for r in rs])
        # The round whose dnnscape time is nearest the aggregate supplies the /ops profile.
        rep = min(rs, key=lambda r: abs(r["dnnscape"]["step_time_s"] - dt)
                  if math.isfinite(r["dnnscape"]["step_time_s"]) else math.inf)
        results.append(dict(label=label, family=family, mode=mode, threads=threads,
                            params=next(c[2] for c in configs if c[0] == label),
                            dnnscape_s=dt, pytorch_s=pt,
                            # Paired: each round's two sides ran back to back under the same
                            # load, so the ratio is taken per round, then the median of those.
                            ratio=median([r["ratio"] for r in rs]),
                            load1=[r["load1"] for r in rs],
                            round_ratios=[r["ratio"] for r in rs], rounds=rs,
                            ops=rep["dnnscape"].get("ops", []), note=rep["pytorch"].get("note", "")))

    # ------------------------------------------------------------------------------ table
    def spread(rs, side):
        if len(rs) == 1:
            r = rs[0][side]
            return "" if "ci_low_s" not in r else \
                f"[{r['ci_low_s'] * 1e3:.4g}, {r['ci_high_s'] * 1e3:.4g}]"
        v = [r[side]["step_time_s"] * 1e3 for r in rs]
        return f"{min(v):.4g}..{max(v):.4g}"

    print()
    what = "95% CI" if rounds == 1 else "rounds"
    print(f"threads {threads}; measure {m}; rounds {rounds}; ratio = PyTorch step / dnnscape "
          f"step (> 1: dnnscape faster)")
    if rounds > 1:
        print("step = median over rounds of each round's median; 'rounds' = min..max of the "
              "round medians; ratio = median of the per-round ratios (each round's pair ran "
              "back to back)")
    hdr = (f"| {'config':<18} | {'mode':<9} | {'dnnscape ms':>11} | {what:<19} | "
           f"{'PyTorch ms':>11} | {what:<19} | {'ratio':>5} | {'per round':<16} | "
           f"{'load1':<11} |")
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for r in results:
        rr = " ".join(f"{x:.2f}" for x in r["round_ratios"])
        ld = " ".join(f"{x:.1f}" for x in r["load1"])
        print(f"| {r['label']:<18} | {r['mode']:<9} | {r['dnnscape_s'] * 1e3:>11.3f} | "
              f"{spread(r['rounds'], 'dnnscape'):<19} | {r['pytorch_s'] * 1e3:>11.3f} | "
              f"{spread(r['rounds'], 'pytorch'):<19} | {r['ratio']:>5.2f} | {rr:<16} | "
              f"{ld:<11} |")
    print()
    ok = [r for r in results if math.isfinite(r["ratio"])]
    print(f"geometric mean of ratios: {geomean([r['ratio'] for r in ok]):.2f} over {len(ok)} "
          f"config-modes")
    for fam in ("fc", "cnn", "rnn"):
        for mode in modes:
            rs = [r["ratio"] for r in ok if r["family"] == fam and r["mode"] == mode]
            if rs:
                print(f"  {fam:<3} {mode:<9} {geomean(rs):.2f} (n {len(rs)})")
        rs = [r["ratio"] for r in ok if r["family"] == fam]
        if rs:
            print(f"  {fam:<3} {'all':<9} {geomean(rs):.2f} (n {len(rs)})")
    for mode in modes:
        rs = [r["ratio"] for r in ok if r["mode"] == mode]
        if rs:
            print(f"  all {mode:<9} {geomean(rs):.2f} (n {len(rs)})")
    notes = sorted({r["note"] for r in results} - {""})
    for n in notes:
        print(f"note: {n}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"elapsed {elapsed:.0f} s")

    slow = [r for r in results if not (r["ratio"] >= 1.0)]
    print()
    print(f"configs where dnnscape is slower (ratio < 1): {len(slow)}")
    for r in results:
        if (r in slow or args.ops) and r["ops"]:
            print(f"  {r['label']} {r['mode']}: ratio {r['ratio']:.2f}")
            print_ops(r["ops"], r["dnnscape_s"], args.top_ops)

    if args.json:
        sysinfo = next((x["dnnscape"]["system"] for r in results for x in r["rounds"]
                        if "system" in x["dnnscape"]), {})
        Path(args.json).write_text(json.dumps(dict(
            threads=threads, rounds=rounds, measure=m, torch=torch_backend_info(), system=sysinfo,
            elapsed_s=elapsed, results=results), indent=1, default=str))
        print(f"wrote {args.json}")
    if tmp:
        tmp.cleanup()
    return 0 if not slow else 1


if __name__ == "__main__":
    sys.exit(main())
