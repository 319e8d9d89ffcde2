"""Gaunt vs Clebsch-Gordan, measured: every pass of both products on one GPU, the S2-grid method as the peer,
and the price in expressivity (issue #26).

    TUMBLER_AUTOTUNE=0 python bench/gaunt.py [--quick] [--no-grid] [--price-only]
    python bench/gaunt.py --train-summary runs/acac-cg runs/acac-gaunt ... [--test F.h5 [--test-exclude T.h5]]
        [--json OUT.json]   (table of finished train.py runs: errors, parameters, structures per CPU-second)

Timed (float32, CUDA events, median of synced calls; peak memory), each pass as bench/kernels.py defines it:
  conv (gather + TP + scatter), ConvSpec(lmax_in, 3, 3), at the kernel table's sizes:
    fwd (no grad) | fwdbwd (gradients of x, Y, w) | dbl (force training: SH(vec) -> conv -> E; F = dE/dvec with
    create_graph; loss(F) backward to x and w)
  symmetric contraction, correlation 3, 10 species: fwd | fwdbwd (x, w) | dbl (gx = dE/dx with create_graph;
    loss(gx) backward to w)
  backends: "cg" and "gaunt" on our fused Triton kernels (generated from each spec's coupling tables), and
  "grid" = kernels/gaunt.py, the Gaunt product computed the paper's way in torch (signals on an S2 grid,
  pointwise product, projection), the same function as "gaunt". e3nn (torch) has no Gaunt product to compare.
Before timing, each gaunt backend's forward is checked against the grid at the same size (float32, rel 1e-4).
TUMBLER_AUTOTUNE=0 runs every kernel at its measured default tile: no tuning time, and both products get the same
tiles. The price (CPU, float64): paths per (lmax_in, l_out, nu) of each product basis, the fit residual of a
function Gaunt dropped (kernels.gaunt.fit_residuals) and of the cross product. JSON to
bench/results/gaunt-<gpu>-<date>.json (and $OUT if set); the table is printed last.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # `import kernels` is the package
sys.path.insert(0, str(_HERE.parent))

import kernels  # noqa: E402
from kernels import gaunt  # noqa: E402

CONV = [  # (name, lmax_in, channels, nodes, neighbours per node): the kernel table's sizes (DESIGN.md)
    ("32ch_l3_20k", 3, 32, 1000, 20),
    ("128ch_l1_20k", 1, 128, 1000, 20),
    ("128ch_l1_300k", 1, 128, 10000, 30),
    ("64ch_l2_150k", 2, 64, 5000, 30),
]
SC = [("128ch_l3in_l1out_5k", 3, 1, 128, 5000, 10), ("128ch_l3in_l0out_5k", 3, 0, 128, 5000, 10)]
PRODUCTS = ("cg", "gaunt")


def time_ms(fn, budget_ms: float = 300.0) -> float:
    """Median CUDA-event ms of one synced call; 3 to 30 repetitions, as many as fit in about budget_ms."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    once = (time.perf_counter() - t0) * 1e3
    reps = int(min(30, max(3, budget_ms / max(once, 1e-3))))
    for _ in range(min(reps, 5)):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return float(np.median(ts))


def peak_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def measure(row: dict, passes: dict) -> dict:
    """Time each pass (ms and peak MiB), recording an out-of-memory or other error instead of a number."""
    for name, fn in passes.items():
        try:
            row[name] = time_ms(fn)
            row[name + "_peak_MiB"] = peak_mib(fn)
        except torch.cuda.OutOfMemoryError:
            row[name] = float("nan")
            row[name + "_error"] = "out of memory"
        except Exception as e:  # recorded, so that one failing backend does not lose the run
            row[name] = float("nan")
            row[name + "_error"] = repr(e)[:300]
        torch.cuda.empty_cache()
    return row


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def conv_rows(ops, dev, quick: bool, grid_peer: bool) -> list:
    rows = []
    for name, lmax_in, c, n, k in CONV[:1] if quick else CONV:
        g = torch.Generator().manual_seed(0)
        recv = torch.arange(n).repeat_interleave(k)
        send = torch.randint(0, n, (n * k,), generator=g)
        graph = kernels.make_graph(send.to(dev), recv.to(dev), n)
        e = n * k
        x = torch.randn(n, (lmax_in + 1) ** 2, c, generator=g).to(dev).requires_grad_(True)
        vec = torch.randn(e, 3, generator=g).to(dev).requires_grad_(True)
        yd = ops.spherical_harmonics(vec.detach(), 3)
        num_paths = kernels.ConvSpec(lmax_in, 3, 3).num_paths
        w = torch.randn(e, num_paths, c, generator=g).to(dev).requires_grad_(True)
        cot = torch.randn(n, 16, c, generator=g).to(dev)
        yg = yd.clone().requires_grad_(True)
        grid_op = lambda h, y, ww, gr, spec: gaunt.grid_edge_conv(h, y, ww, gr, spec)  # noqa: E731
        backends = [(p, p, ops.edge_conv) for p in PRODUCTS] + ([("grid", "gaunt", grid_op)] if grid_peer else [])
        reference = None
        for backend, product, conv in backends:
            spec = kernels.ConvSpec(lmax_in, 3, 3, product)
            row = dict(op="conv", cfg=name, backend=backend, product=product, nodes=n, edges=e, channels=c,
                       paths=spec.num_paths)

            def fwd(conv=conv, spec=spec):
                with torch.no_grad():
                    return conv(x, yd, w, graph, spec)

            def fwdbwd(conv=conv, spec=spec):
                torch.autograd.grad(conv(x, yg, w, graph, spec), [x, yg, w], cot)

            def dbl(conv=conv, spec=spec):
                y = ops.spherical_harmonics(vec, 3)
                (f,) = torch.autograd.grad((conv(x, y, w, graph, spec) * cot).sum(), vec, create_graph=True)
                torch.autograd.grad((f * f).sum(), [x, w])

            passes = {"fwd": fwd, "fwdbwd": fwdbwd, "dbl": dbl}
            if backend != "grid":
                ops.precompile(lambda: [fn() for fn in passes.values()], dev)
            try:
                out = fwd()
                if backend == "gaunt":  # the grid is the oracle of the gaunt product
                    reference = reference if reference is not None else gaunt.grid_edge_conv(x.detach(), yd, w.detach(), graph, spec)
                    row["rel_err_vs_grid"] = rel_err(out, reference)
                del out
            except torch.cuda.OutOfMemoryError:
                row["check_error"] = "out of memory"
            torch.cuda.empty_cache()
            rows.append(measure(row, passes))
            print(json.dumps(rows[-1]), flush=True)
        del reference
    return rows


def sc_rows(ops, dev, quick: bool, grid_peer: bool) -> list:
    rows = []
    for name, lmax_in, lmax_out, c, n, n_el in SC[:1] if quick else SC:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(n, (lmax_in + 1) ** 2, c, generator=g).to(dev).requires_grad_(True)
        species = torch.randint(0, n_el, (n,), generator=g).to(dev)
        cot = torch.randn(n, (lmax_out + 1) ** 2, c, generator=g).to(dev)
        backends = [(p, p, ops.symmetric_contraction) for p in PRODUCTS]
        backends += [("grid", "gaunt", gaunt.grid_symmetric_contraction)] if grid_peer else []
        for backend, product, sc in backends:
            spec = kernels.ContractionSpec(lmax_in, lmax_out, 3, product)
            w = (torch.randn(n_el, spec.num_weights, c, generator=g) / spec.num_weights ** 0.5).to(dev).requires_grad_(True)
            row = dict(op="symmetric_contraction", cfg=name, backend=backend, product=product, nodes=n, channels=c,
                       elements=n_el, weights=spec.num_weights)

            def fwd(sc=sc, spec=spec, w=w):
                with torch.no_grad():
                    return sc(x, species, w, spec)

            def fwdbwd(sc=sc, spec=spec, w=w):
                torch.autograd.grad(sc(x, species, w, spec), [x, w], cot)

            def dbl(sc=sc, spec=spec, w=w):
                (gx,) = torch.autograd.grad((sc(x, species, w, spec) * cot).sum(), x, create_graph=True)
                torch.autograd.grad((gx * gx).sum(), [w])

            passes = {"fwd": fwd, "fwdbwd": fwdbwd, "dbl": dbl}
            if backend != "grid":
                ops.precompile(lambda: [fn() for fn in passes.values()], dev)
            if backend == "gaunt":
                row["rel_err_vs_grid"] = rel_err(fwd(), gaunt.grid_symmetric_contraction(x.detach(), species, w.detach(), spec))
                if not row["rel_err_vs_grid"] < 1e-4:
                    row["check_error"] = ("Triton contraction does not match the grid: the contraction form must be "
                                          "built from spec.tensor_product (docs/tensor_products.md)")
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    continue
            rows.append(measure(row, passes))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def price() -> dict:
    """Paths of each product basis per (lmax_in, l_out, nu), the fit of a dropped function, the cross product."""
    rows = []
    for lmax_in in (1, 2, 3):
        for l_out in (0, 1, 2):
            for nu in (1, 2, 3):
                r = gaunt.fit_residuals(lmax_in, l_out, nu)
                rows.append(dict(lmax_in=lmax_in, l_out=l_out, nu=nu, **r))
    return {"paths": rows, "cross_product": gaunt.cross_product_residuals()}


def table(rows: list, cost: dict) -> str:
    out = [f"{'op':<6} {'cfg':<20} {'backend':<6} {'fwd':>8} {'fwdbwd':>8} {'dbl':>8} ms   {'peak dbl MiB':>12}  check"]
    for r in rows:
        cells = " ".join(f"{r.get(p, float('nan')):8.3f}" for p in ("fwd", "fwdbwd", "dbl"))
        err = r.get("check_error") or next((r[k] for k in r if k.endswith("_error")), "")
        check = f"{r['rel_err_vs_grid']:.1e}" if "rel_err_vs_grid" in r else ""
        out.append(f"{r['op'][:6]:<6} {r['cfg']:<20} {r['backend']:<6} {cells}    {r.get('dbl_peak_MiB', float('nan')):12.0f}  "
                   f"{check} {err}")
    out.append("\nprice of the Gaunt product basis (paths cg -> gaunt; fit residual of a function gaunt dropped):")
    for r in cost["paths"]:
        if r["paths_cg"] != r["paths_gaunt"]:
            out.append(f"  lmax_in={r['lmax_in']} l_out={r['l_out']} nu={r['nu']}: {r['paths_cg']} -> {r['paths_gaunt']} "
                       f"paths; residual cg {r['cg']:.1e}, gaunt {r['gaunt']:.2f}")
    same = sum(r["paths_cg"] == r["paths_gaunt"] for r in cost["paths"])
    out.append(f"  the other {same} of {len(cost['paths'])} (lmax_in <= 3, l_out <= 2, nu <= 3) lose nothing")
    cp = cost["cross_product"]
    out.append(f"cross product 1 x 1 -> 1: residual cg {cp['cg']:.1e}, gaunt {cp['gaunt']:.2f} (not a tumbler path)")
    return "\n".join(out)


def _cpu_seconds(folder: Path):
    """user + sys CPU seconds of the train.py process, from <folder>/cpu_time.txt, which GNU time writes:
    /usr/bin/time -f "%U %S %e" -o <folder>/cpu_time.txt python train.py ... (user, sys, wall seconds; they
    include the children it waited for, so DataLoader workers count too). None when the file is absent."""
    path = folder / "cpu_time.txt"
    if not path.is_file():
        return None
    try:
        user, system, _wall = map(float, path.read_text().split()[-3:])
    except ValueError:
        raise SystemExit(f"bench/gaunt.py: {path}: expected 'user sys wall' seconds (GNU time -f \"%U %S %e\")")
    return user + system


def _test_errors(model, path: Path, exclude: Path | None) -> dict:
    """E (meV/atom, meV) and F (meV/Å, over force components) RMSE of `model` on the HDF5 file `path`, as the
    trainer's metrics define them, leaving out the structures whose positions equal one in `exclude`."""
    import data
    from potential.evaluate import evaluate

    seen = set()
    if exclude is not None:
        seen = {np.round(s.positions, 6).tobytes() for s in data.open_dataset(exclude)}
    structures = [s for s in data.open_dataset(path) if np.round(s.positions, 6).tobytes() not in seen]
    if not structures:
        raise SystemExit(f"bench/gaunt.py: {path}: no test structure is left after leaving out those of {exclude}")
    unlabelled = [s.index for s in structures if s.energy is None or s.forces is None]
    if unlabelled:
        raise SystemExit(f"bench/gaunt.py: {path}: structures {unlabelled[:5]} lack an energy or forces")
    results = evaluate(structures, model)
    de = np.array([r["energy"] - s.energy for r, s in zip(results, structures)])                  # eV
    n = np.array([len(s.numbers) for s in structures])
    df = np.concatenate([(r["forces"] - s.forces).ravel() for r, s in zip(results, structures)])  # eV/Å
    rms = lambda x: float(1000 * np.sqrt(np.mean(x * x)))  # noqa: E731  eV -> meV
    return dict(file=str(path), exclude=None if exclude is None else str(exclude), structures=len(structures),
                left_out=len(data.open_dataset(path)) - len(structures),
                e_atom_rmse=rms(de / n), e_rmse=rms(de), f_rmse=rms(df))


def train_summary(folders: list, test: Path | None = None, exclude: Path | None = None) -> list:
    """One row per train.py output folder: product, parameters, epochs, training structures (optimizer steps *
    batch_size), structures per CPU-second (over the process's user + sys seconds, _cpu_seconds) and per wall
    second (over the epochs' seconds in metrics.csv, validation included), the best model's validation errors
    (test_metrics.json) and, with `test`, its errors on that file (_test_errors)."""
    import csv

    import yaml

    from potential import load_model
    rows = []
    for folder in map(Path, folders):
        metrics = json.loads((folder / "test_metrics.json").read_text())["valid"]
        with open(folder / "metrics.csv") as f:
            epochs = list(csv.DictReader(f))
        config = yaml.safe_load((folder / "config.yaml").read_text())
        model = load_model(folder / "model.pt")
        seen = int(epochs[-1]["step"]) * config["training"]["batch_size"]
        cpu = _cpu_seconds(folder)
        row = dict(run=folder.name, product=model.config.tensor_product,
                   params=sum(p.numel() for p in model.parameters()), epochs=len(epochs), seed=config["seed"],
                   dtype=config["dtype"], train=config["data"]["train"], batch_size=config["training"]["batch_size"],
                   model={k: config["model"][k] for k in ("channels", "lmax", "lmax_sh", "correlation",
                                                          "num_interactions")},
                   structures_trained=seen, cpu_seconds=cpu,
                   structures_per_cpu_s=None if cpu is None else seen / cpu,
                   structures_per_wall_s=seen / sum(float(r["time_s"]) for r in epochs),
                   valid={k: metrics[k] for k in ("e_atom_rmse", "e_rmse", "f_rmse")})
        if test is not None:
            row["test"] = _test_errors(model, test, exclude)
        rows.append(row)
    return rows


def summary_table(rows: list) -> str:
    """The rows of train_summary as a text table (E in meV/atom and meV, F in meV/Å)."""
    errors = f"{'E meV/at':>9} {'E meV':>7} {'F meV/A':>8}"
    tested = any("test" in r for r in rows)
    out = [f"{'run':<16} {'product':<7} {'params':>7} {'epochs':>6} {'str/CPU-s':>9} {'str/wall-s':>10}  valid "
           + errors + ("  test " + errors if tested else "")]
    for r in rows:
        per_cpu = "-" if r["structures_per_cpu_s"] is None else f"{r['structures_per_cpu_s']:.2f}"
        line = (f"{r['run']:<16} {r['product']:<7} {r['params']:>7} {r['epochs']:>6} {per_cpu:>9} "
                f"{r['structures_per_wall_s']:>10.2f}")
        for part in ("valid", "test") if tested else ("valid",):
            e = r.get(part)
            line += f"  {part} " + ("-" if e is None else
                                    f"{e['e_atom_rmse']:>9.3f} {e['e_rmse']:>7.2f} {e['f_rmse']:>8.2f}")
        out.append(line)
    return "\n".join(out)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def train_summary_main(argv) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="bench/gaunt.py --train-summary",
                                     description="Table (and JSON) of finished train.py runs, cg vs gaunt.")
    parser.add_argument("folders", nargs="+", help="train.py output folders")
    parser.add_argument("--test", type=Path, help="HDF5 file to evaluate every best model on")
    parser.add_argument("--test-exclude", type=Path, help="leave out test structures whose positions are in here")
    parser.add_argument("--json", type=Path, help="write the rows here (atomically), keeping other runs' rows")
    args = parser.parse_args(argv)
    rows = train_summary(args.folders, args.test, args.test_exclude)
    if args.json is not None:  # rows of other runs already in the file stay (one file for several invocations)
        new = {r["run"] for r in rows}
        kept = [r for r in json.loads(args.json.read_text())["rows"] if r["run"] not in new] \
            if args.json.is_file() else []
        write_json({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "torch": torch.__version__, "cpus": os.cpu_count(),
                    "units": {"e_atom_rmse": "meV/atom", "e_rmse": "meV", "f_rmse": "meV/Å (force components)"},
                    "rows": kept + rows}, args.json)
    print(summary_table(rows))


def main(argv):
    if argv and argv[0] == "--train-summary":
        train_summary_main(argv[1:])
        return
    quick, grid_peer = "--quick" in argv, "--no-grid" not in argv
    t0 = time.time()
    cost = price()
    rows = []
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "autotune": os.environ.get("TUMBLER_AUTOTUNE", "1")}
    if "--price-only" not in argv:
        if not torch.cuda.is_available():
            raise SystemExit("bench/gaunt.py: the timed part needs a CUDA GPU (--price-only runs on the CPU)")
        import triton
        dev = torch.device("cuda")
        ops = kernels.get_ops("triton")
        meta.update(gpu=torch.cuda.get_device_name(), triton=triton.__version__)
        rows += conv_rows(ops, dev, quick, grid_peer)
        rows += sc_rows(ops, dev, quick, grid_peer)
    meta["seconds"] = round(time.time() - t0, 1)
    result = {**meta, "rows": rows, "price": cost}
    gpu = meta.get("gpu", "cpu").replace(" ", "-")
    name = f"gaunt-{gpu}-{datetime.date.today().isoformat()}.json"
    folders = [_HERE / "results"] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    for folder in folders:
        write_json(result, folder / name)
    print(table(rows, cost))
    print(f"{meta['seconds']} s; JSON: {folders[-1] / name}")


if __name__ == "__main__":
    main(sys.argv[1:])
