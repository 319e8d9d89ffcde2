"""Molecular dynamics with a tumbler model through ASE.

    python md.py --model runs/quickstart/model.pt --structure cu.xyz --ensemble nvt --temperature 300 --steps 2000
    python md.py --config configs/md_quickstart.yaml [--steps 500 ...]     # CLI flags override the YAML

Units: temperature K, pressure GPa, timestep fs, friction 1/fs. See potential/simulation/ase_md.py for the
integrators, the log columns and the trajectory formats.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--config", help="YAML file with any of the options below (flags given here override it)")
    a("--model", nargs="+", help="tumbler model file (.pt); several files make a committee (mean forces, and "
      "the max force spread as a log column)")
    a("--structure", help="any ASE-readable structure file (last frame is used)")
    a("--ensemble", choices=["nve", "nvt", "npt"], help="default nve")
    a("--thermostat", choices=["langevin", "bussi", "nose-hoover"], help="nvt thermostat, default langevin")
    a("--barostat", choices=["mtk", "berendsen"], help="npt barostat: isotropic MTK (default) or Berendsen")
    a("--temperature", type=float, help="K: initial Maxwell-Boltzmann velocities and thermostat target (default 300)")
    a("--pressure", type=float, help="GPa, npt target (default 0)")
    a("--timestep", type=float, help="fs (default 1)")
    a("--steps", type=int, help="number of MD steps (default 1000)")
    a("--trajectory", help="output trajectory: .traj (ASE) or .xyz/.extxyz")
    a("--log", help="CSV log file ('-' for stdout)")
    a("--interval", type=int, help="steps between log lines / trajectory frames (default 10)")
    a("--device", choices=["cpu", "cuda"], help="default cpu")
    a("--seed", type=int, help="seed for velocities and stochastic thermostats (default 0)")
    a("--friction", type=float, help="Langevin friction, 1/fs (default 0.01)")
    a("--tdamp", type=float, help="thermostat time constant, fs (default 100 timesteps)")
    a("--pdamp", type=float, help="barostat time constant, fs (default 1000 timesteps)")
    a("--compressibility", type=float, help="Berendsen barostat compressibility, 1/GPa (default 0.01)")
    a("--skin", type=float, help="Verlet-list skin, Å (default 1.0)")
    a("--threads", type=int, help="torch CPU threads (default: torch's; 1 is fastest for small systems)")
    a("--engine", choices=["ase", "gpu"],
      help="ase (default): ASE's integrators through potential.Calculator; gpu: the device-resident engine "
           "(potential.simulation.dynamics: nve, nvt langevin/bussi; also runs on the CPU)")
    a("--uncertainty-threshold", type=float, help="committee only: eV/Å; a step whose max force spread exceeds it "
      "is written to --uncertainty-frames and, with --uncertainty-action stop (default), ends the run")
    a("--uncertainty-action", choices=["stop", "write"], help="stop (default) or write every such frame and go on")
    a("--uncertainty-frames", help="extended XYZ file for those frames (default uncertain.extxyz)")
    a("--no-progress", dest="progress", action="store_const", const=False, help="no tqdm bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config")
    from potential.simulation.md_config import load_config
    from potential.simulation.run import merge_options, run_from_config

    try:
        file_options = load_config(config_path) if config_path else {}
        cfg = merge_options(file_options, args, where=config_path or "")
        result = run_from_config(cfg, base_dir=Path(config_path).parent if config_path else None)
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"md.py: error: {e}\n")
    last = result.rows[-1] if result.rows else None
    summary = f"md.py: {result.steps} steps in {result.wall_s:.1f} s ({result.ms_per_step:.2f} ms/step)"
    if last is not None:
        summary += f"; final T = {last['temperature_K']:.1f} K, Etot = {last['etot_eV']:.6f} eV"
    if result.stopped or result.uncertain_frames:
        summary += f"; {result.uncertain_frames} frame(s) above the uncertainty threshold -> {cfg.uncertainty_frames}"
    if result.stopped:
        summary += f"; {result.stopped}"
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
