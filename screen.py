"""Batch screening with a tumbler model: single points or relaxations of many structures.

    python screen.py --model model.pt --structures candidates.xyz --out results.h5
    python screen.py --model model.pt --structures candidates.xyz --relax --fmax 0.05 --out relaxed.extxyz

IN: extxyz or any ASE-readable file (all frames), or our HDF5 dataset. OUT by suffix: .h5/.hdf5,
.xyz/.extxyz or .csv (layouts in potential/simulation/screening.py). Bad structures are recorded with their
error and the others go on.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", required=True, nargs="+", help="tumbler model file (.pt); several files make a committee, whose "
      "uncertainty (energy_per_atom_std, max_force_spread, force_spread) is written too")
    a("--structures", required=True, help="input structures: extxyz / ASE-readable file or our .h5")
    a("--out", required=True, help="output: .h5/.hdf5, .xyz/.extxyz or .csv")
    a("--relax", action="store_true", help="relax each structure with ASE (positions; cell too with --relax-cell)")
    a("--relax-cell", action="store_true", help="also relax the cell (FrechetCellFilter; implies --relax)")
    a("--optimizer", choices=["fire", "bfgs"], default="fire", help="ASE optimizer (default fire)")
    a("--fmax", type=float, default=0.05, help="force convergence, eV/Å (default 0.05)")
    a("--max-steps", type=int, default=500, help="optimizer steps per structure (default 500)")
    a("--batch-atoms", type=int, default=4096, help="atom budget per forward pass (default 4096)")
    a("--device", choices=["cpu", "cuda"], default="cpu")
    a("--skin", type=float, default=1.0, help="Verlet-list skin for relaxations, Å (default 1.0)")
    a("--threads", type=int, help="torch CPU threads (default: torch's)")
    a("--engine", choices=["ase", "gpu"], default="ase",
      help="relaxation engine: ase (default, one structure at a time) or gpu (batched FIRE on the model's device, "
           "potential.simulation.fire; positions only)")
    a("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from potential.committee import Committee
    from potential.evaluate import load_model_file
    from potential.simulation.screening import OUTPUT_SUFFIXES, read_input, screen, write_results

    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads {args.threads} must be >= 1")
            import torch

            torch.set_num_threads(args.threads)
        if not args.out.lower().endswith(OUTPUT_SUFFIXES):
            raise ValueError(f"--out {args.out}: suffix must be one of {', '.join(OUTPUT_SUFFIXES)}")
        models = [load_model_file(path, device=args.device) for path in args.model]
        model = models[0] if len(models) == 1 else Committee(models, names=args.model)
        structures = read_input(args.structures)
        atoms, results = screen(
            structures, model, relax=args.relax or args.relax_cell, fmax=args.fmax, max_steps=args.max_steps,
            optimizer=args.optimizer, relax_cell=args.relax_cell, batch_atoms=args.batch_atoms,
            device=args.device, skin=args.skin, progress=args.progress, engine=args.engine,
        )
        meta = {"model": " ".join(args.model), "source": args.structures, "fmax": args.fmax if args.relax else float("nan")}
        write_results(args.out, atoms, results, meta)
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"screen.py: error: {e}\n")
    bad = sum(r["error"] is not None for r in results)
    msg = f"screen.py: {len(results)} structures, {bad} with errors -> {args.out}"
    if args.relax or args.relax_cell:
        msg += f"; {sum(bool(r.get('converged')) for r in results)} converged (fmax {args.fmax} eV/Å)"
    print(msg, file=sys.stderr)
    for r in results:
        if r["error"] is not None:
            print(f"  structure {r['index']}: {r['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
