"""Training speed, ours vs MACE, in one run on one GPU: ms per optimizer step and structures per second.

    python bench/train_step.py                                   # AcAc, 3BPA, Cu; batch 5, 32, 128; both sizes
    python bench/train_step.py --datasets acac --batch-sizes 5 --sizes mace --budget-s 120
    python bench/train_step.py --quick --cpu                     # smoke test: tiny sizes, few structures, CPU

What a step is (each row: dataset x size x batch size x implementation, on the same structures):
  ours-captured  the trainer's step with training.graph=on (potential/training/trainer.py): the training graphs
                 built once (GraphSet, on the device), batches gathered in a shuffled order, TrainStep (padded,
                 captured as one CUDA graph per bucket; on CPU the padded step run eagerly), AdamW(capturable,
                 amsgrad) + EMA (AveragedModel), the per-step bookkeeping of Trainer._train_epoch.
  ours-eager     the trainer's training.graph=off step: the same gathered batches, forward, loss, finiteness
                 checks, backward on the calling thread, clipping, AdamW, EMA, metrics.
  mace-cueq      ScaleShiftMACE (mace-torch) with cuEquivariance, trained as mace.tools.train.take_step does,
  mace-e3nn      batches from MACE's own DataLoader (bench/mace_peer.py); mace-cueq only on CUDA.
Sizes: "mace" = 128 channels, hidden l <= 1, edge l <= 3, correlation 3, 2 interactions, r_max 5 Å, 8 Bessel,
radial MLP [64, 64, 64], float32 (MACE's paper size); "shipped" = the model section and dtype of
configs/<dataset>.yaml (MACE built at the same channels, l, correlation and dtype). Loss: energy weight 1 on
(eV/atom)^2, forces weight 100 on (eV/Å)^2, clipping at 10, EMA decay 0.99, lr 0.01, for all.

Timing: each row runs a window of --steps optimizer steps (fewer for big batches: --max-structures) once as
warm-up (Triton compilation and autotuning, one CUDA-graph capture per (atoms, edges) bucket, cuEquivariance's
set-up), then the same window again (the same batches of a seeded shuffled order; model and optimizer state
carried on), timed from a synchronize to a synchronize: ms per step = wall time / steps, structures per second
= structures trained on / wall time. The data loading (our on-device gather; MACE's DataLoader) is inside the
timed window: it is what a user waits for. Rows stop being started once --budget-s has passed.
Prints a table (with ours / best MACE ratios) and writes bench/results/train-step-<device>-<UTC time>.json.
Data: extxyz training files, by default under ../shared/data (AcAc/train_300K.xyz, 3BPA/train_300K.xyz,
zuo2020/Cu_train.xyz, forces under the key "force"); --data NAME=PATH for others. MACE's rows need mace-torch,
e3nn, torch_ema (and cuequivariance-torch for mace-cueq) importable, e.g. on PYTHONPATH; a row that fails is
recorded with its error, the run goes on, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]  # `kernels` is the package
sys.path.insert(0, str(ROOT))
from bench.result_file import device_name, header, write_result  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DATASETS = {  # name: (default file, forces key, shipped config)
    "acac": (SHARED / "AcAc" / "train_300K.xyz", None, "acac.yaml"),
    "3bpa": (SHARED / "3BPA" / "train_300K.xyz", None, "3bpa.yaml"),
    "cu": (SHARED / "zuo2020" / "Cu_train.xyz", "force", "cu_zuo.yaml"),
}
MACE_SIZE = dict(channels=128, lmax=1, lmax_sh=3, correlation=3, num_interactions=2, r_max=5.0, num_bessel=8,
                 radial_hidden=[64, 64, 64], dtype="float32")
QUICK_SIZE = dict(MACE_SIZE, channels=8, correlation=2, radial_hidden=[16], dtype="float64")
BACKENDS = ("ours-captured", "ours-eager", "mace-cueq", "mace-e3nn")


def read(path: Path, forces_key: str | None, limit: int | None, r_max: float):
    """Structures of `path` (isolated-atom references dropped) and the data-derived model inputs, computed as
    potential/training/trainset.py does (E0 by least squares unless isolated atoms are in the file)."""
    import data
    from data.stats import energy_shift_scale, is_isolated_atom, mean_num_neighbors, reference_energies
    if not path.is_file():
        raise SystemExit(f"train_step.py: data file not found: '{path}' (pass its path with --data NAME=PATH)")
    every = data.read_structures(path, forces_key=forces_key, require=("energy", "forces"))
    structures = [s for s in every if not is_isolated_atom(s)][:limit]
    elements = sorted({int(z) for s in structures for z in s.numbers})
    e0 = reference_energies([s for s in every if is_isolated_atom(s)] + structures, elements)
    shift, scale = energy_shift_scale(structures, e0)
    stats = {"elements": elements, "atomic_energies": [float(e0[z]) for z in elements], "shift": float(shift),
             "scale": float(scale), "avg_num_neighbors": float(mean_num_neighbors(structures, r_max))}
    return structures, stats


def shipped_size(config: str) -> dict:
    from potential.training.config import config_to_dict, load_config
    cfg = load_config(ROOT / "configs" / config)
    size = {k: v for k, v in config_to_dict(cfg.model).items() if v is not None}
    for k in ("elements", "atomic_energies", "avg_num_neighbors", "scale", "shift"):
        size.pop(k, None)  # from the data, as for the mace size
    return dict(size, dtype=cfg.dtype)


# ------------------------------------------------------------------------------------------------ ours

def ours_step(structures, size: dict, stats: dict, batch_size: int, captured: bool, device):
    """(window, train_step): `window(steps)` runs `steps` of our trainer's steps (see the module docstring) from
    a seeded epoch order on (the same batches at every call), yielding the number of structures of each;
    train_step: the TrainStep (None for the eager step)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from potential.model import ModelConfig, Potential, calling_thread_backward
    from potential.training.captured_step import TrainStep
    from potential.training.graph_cache import GraphSet
    from potential.training.metrics import ErrorMetrics, LossWeights, compute_loss

    dtype = getattr(torch, size["dtype"])
    model = Potential(ModelConfig.from_dict(dict(size, **stats))).to(device)
    model.zero_readouts()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=0.01, weight_decay=5e-7, amsgrad=True,
                                  capturable=captured and device.type == "cuda")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99))
    weights = LossWeights(energy=1.0, forces=100.0, stress=0.0)
    graphs = GraphSet.build(structures, size["r_max"], device, cache=False, log=lambda *_: None)
    train_step = None if not captured else TrainStep(model, optimizer, weights, batch_size=batch_size, forces=True,
                                                     stress=False, clip_grad_norm=10.0, ema=ema, ema_decay=0.99)
    first = [True]

    def precompile(batch):  # Trainer._precompile: every kernel of a step compiled at once, in worker processes
        def step_and_evaluation():
            out = model(batch, forces=True, stress=False, training=True)
            torch.autograd.grad(compute_loss(batch, out, weights)[0], params, allow_unused=True)
            model(batch, forces=True, stress=False, training=False)
        model.ops.precompile(step_and_evaluation, device)
        first[0] = False

    def window(steps: int):
        """`steps` steps from epoch 0's shuffled order on (the same batches at every call)."""
        model.train()
        generator, done = torch.Generator().manual_seed(0), 0
        while True:  # epochs: Trainer._train_epoch, one check of the captured steps' finiteness per epoch
            metrics, checks = ErrorMetrics(device), []
            order = torch.randperm(len(structures), generator=generator).tolist()
            for batch in graphs.batches(order, batch_size):
                if done == steps:
                    break
                batch = batch.to(device=device, dtype=dtype)
                if first[0]:
                    precompile(batch)
                done += 1
                if train_step is not None:
                    loss, norm, sums = train_step(batch)
                    metrics.sums += sums
                    checks.append((torch.isfinite(loss), torch.isfinite(norm), batch.index, loss.clone(),
                                   norm.clone()))  # clones: a captured step's outputs are overwritten by the next
                    if len(checks) % 25 == 0:
                        loss.item()  # the progress bar's loss
                    yield batch.num_structures
                    continue
                out = model(batch, forces=True, stress=False, training=True)
                loss, _ = compute_loss(batch, out, weights)
                if not torch.isfinite(loss).item():
                    raise RuntimeError(f"non-finite loss on structures {batch.index.tolist()}")
                optimizer.zero_grad(set_to_none=True)
                with calling_thread_backward():
                    loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, 10.0)
                if not torch.isfinite(norm):
                    raise RuntimeError(f"non-finite gradient norm on structures {batch.index.tolist()}")
                optimizer.step()
                ema.update_parameters(model)
                metrics.update(batch, out, loss)
                loss.item()  # the progress bar's loss
                yield batch.num_structures
            if checks and not bool(torch.stack([torch.stack([a, b]) for a, b, *_ in checks]).all()):
                raise RuntimeError("a captured step had a non-finite loss or gradient norm")
            if done == steps:
                return

    return window, train_step


# ------------------------------------------------------------------------------------------------ timing

def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_window(window, train_step, steps: int, device) -> dict:
    """Run the window of `steps` steps once as warm-up, then again, timed (see the module docstring)."""
    start = time.perf_counter()
    for _ in window(steps):
        pass
    sync(device)
    warm_s = time.perf_counter() - start
    captures = getattr(train_step, "captures", 0)
    start = time.perf_counter()
    done = sum(window(steps))
    sync(device)
    wall = time.perf_counter() - start
    row = {"ms_per_step": 1e3 * wall / steps, "structures_per_s": done / wall, "steps": steps,
           "structures": done, "warmup_s": warm_s}
    if train_step is not None:  # a capture in the timed window would be a bug of this script: recorded
        row["captures_in_window"] = train_step.captures - captures
        row["cuda_graph"] = bool(train_step.cuda_graph)
    return row


def run_row(backend: str, structures, size, stats, batch_size, steps, device) -> dict:
    if backend.startswith("ours"):
        window, train_step = ours_step(structures, size, stats, batch_size, backend == "ours-captured", device)
    else:
        from bench.mace_peer import mace_step
        window, train_step = mace_step(structures, size, stats, batch_size, backend.split("-")[1], device), None
    return time_window(window, train_step, steps, device)


def ratio_rows(rows: list) -> list:
    """Per (dataset, size, batch): ours / best MACE structures per second, for each of ours."""
    out = []
    keys = dict.fromkeys((r["dataset"], r["size"], r["batch"]) for r in rows)  # in the order run
    for key in keys:
        group = {r["backend"]: r for r in rows if (r["dataset"], r["size"], r["batch"]) == key and "ms_per_step" in r}
        mace = [r["structures_per_s"] for b, r in group.items() if b.startswith("mace")]
        if not mace:
            continue
        for b, r in group.items():
            if b.startswith("ours"):
                out.append(dict(zip(("dataset", "size", "batch"), key), backend=b,
                                ratio_to_best_mace=r["structures_per_s"] / max(mace)))
    return out


def print_table(rows: list, ratios: list) -> None:
    print(f"\n{'dataset':8} {'size':8} {'batch':>5} {'backend':14} {'ms/step':>9} {'struct/s':>9}  note")
    for r in rows:
        if "ms_per_step" in r:
            print(f"{r['dataset']:8} {r['size']:8} {r['batch']:5d} {r['backend']:14} {r['ms_per_step']:9.2f} "
                  f"{r['structures_per_s']:9.1f}  warm-up {r['warmup_s']:.1f} s"
                  + (f", {r['captures_in_window']} captures in window" if r.get("captures_in_window") else ""))
        else:
            print(f"{r['dataset']:8} {r['size']:8} {r['batch']:5d} {r['backend']:14} {'-':>9} {'-':>9}  {r['error']}")
    if ratios:
        print(f"\n{'dataset':8} {'size':8} {'batch':>5} {'ours':14} {'x best MACE struct/s':>21}")
        for r in ratios:
            print(f"{r['dataset']:8} {r['size']:8} {r['batch']:5d} {r['backend']:14} {r['ratio_to_best_mace']:21.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="acac,3bpa,cu", help="of %s (default %%(default)s)" % ",".join(DATASETS))
    p.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                   help="a dataset's training file (default: under %s)" % SHARED)
    p.add_argument("--batch-sizes", default="5,32,128", help="default %(default)s")
    p.add_argument("--sizes", default="mace,shipped", help="mace and/or shipped (default %(default)s)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="default %(default)s")
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per row (default %(default)s)")
    p.add_argument("--max-structures", type=int, default=1280,
                   help="fewer steps where the window would hold more structures than this, at least 3 "
                        "(default %(default)s: 10 steps at batch 128)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="start no new row after this many seconds (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a tiny float64 model (size 'tiny'), 12 structures, batch 2 and 4, 3 steps")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (default: CUDA, required otherwise)")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.cpu else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA GPU: pass --cpu (with --quick for a smoke test)")
    paths = {k: v[0] for k, v in DATASETS.items()}
    for item in args.data:
        name, _, path = item.partition("=")
        if name not in DATASETS or not path:
            p.error(f"--data {item}: expected NAME=PATH with NAME one of {', '.join(DATASETS)}")
        paths[name] = Path(path)
    names = args.datasets.split(",")
    backends = args.backends.split(",")
    for value, allowed, flag in ((names, DATASETS, "--datasets"), (backends, BACKENDS, "--backends"),
                                 (args.sizes.split(","), ("mace", "shipped"), "--sizes")):
        bad = [v for v in value if v not in allowed]
        if bad:
            p.error(f"{flag}: unknown {bad}; choose from {', '.join(allowed)}")
    batch_sizes = [2, 4] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    if device.type == "cpu" and "mace-cueq" in backends:
        backends.remove("mace-cueq")  # cuEquivariance's kernels are CUDA only
    result = header(device_name(device))
    result.update(budget_s=args.budget_s, quick=args.quick, rows=[])
    print(result["device"], "torch", torch.__version__, flush=True)
    start = time.perf_counter()
    for size_name in ["tiny"] if args.quick else args.sizes.split(","):
        for name in names:
            size = {"tiny": QUICK_SIZE, "mace": MACE_SIZE}.get(size_name) or shipped_size(DATASETS[name][2])
            structures, stats = read(paths[name], DATASETS[name][1], 12 if args.quick else None, size["r_max"])
            for batch_size in batch_sizes:
                steps = 3 if args.quick else max(3, min(args.steps, -(-args.max_structures // batch_size)))
                for backend in backends:
                    if time.perf_counter() - start > args.budget_s:
                        print(f"budget of {args.budget_s:.0f} s spent: {backend} {name} {size_name} x{batch_size} "
                              "and later rows not run", flush=True)
                        break
                    row = dict(dataset=name, file=str(paths[name]), structures_in_file=len(structures),
                               size=size_name, model=size, batch=batch_size, backend=backend)
                    try:
                        row.update(run_row(backend, structures, size, stats, batch_size, steps, device))
                        print(f"{name} {size_name} x{batch_size} {backend}: {row['ms_per_step']:.2f} ms/step, "
                              f"{row['structures_per_s']:.1f} structures/s", flush=True)
                    except Exception as e:  # a peer that is missing or fails: recorded, the run goes on
                        row["error"] = f"{type(e).__name__}: {e}"[:300]
                        print(f"{name} {size_name} x{batch_size} {backend}: failed", flush=True)
                        traceback.print_exc()
                    result["rows"].append(row)
                    gc.collect()  # the row's model, optimizer and CUDA graphs, before the next row
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    result["ratios"] = ratio_rows(result["rows"])
    result["wall_s"] = time.perf_counter() - start
    print_table(result["rows"], result["ratios"])
    print(f"wrote {write_result('train-step', result)}")
    return 1 if any("error" in r for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
