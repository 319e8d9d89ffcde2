"""Molecular dynamics through ASE with a tumbler model: the logic behind ``md.py``.

Every integrator comes from ASE (nothing hand-written):
    nve                     ase.md.verlet.VelocityVerlet
    nvt  langevin           ase.md.langevin.Langevin          (friction, 1/fs)
    nvt  bussi              ase.md.bussi.Bussi                (tdamp, fs)
    nvt  nose-hoover        ase.md.nose_hoover_chain.NoseHooverChainNVT (tdamp)
    npt  mtk (default)      ase.md.nose_hoover_chain.IsotropicMTKNPT    (tdamp, pdamp)
    npt  berendsen          ase.md.nptberendsen.NPTBerendsen  (tdamp, pdamp, compressibility)
Velocities start from a Maxwell-Boltzmann distribution at the temperature (ASE's
thermalize_momenta, seeded), with zero net momentum (Stationary); Langevin keeps the centre of
mass with ase.constraints.FixCom (ASE's advice since fixcm was deprecated). NPT needs stress, so
a 3D-periodic structure. Trajectory frames and log lines are written every ``interval`` steps.

The log is CSV text, one line every ``interval`` steps (step 0 included):
    step,time_fs,epot_eV,ekin_eV,etot_eV,temperature_K,pressure_GPa,volume_A3,steps_per_s
pressure_GPa includes the kinetic (ideal-gas) term, as ASE's barostats see it; it is nan for
non-periodic structures. steps_per_s is measured over the steps since the previous line.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any

import ase
import ase.data
import ase.io
import numpy as np
from ase import units
from ase.md.velocitydistribution import Stationary

from .md_config import MDConfig, build_structure

LOG_COLUMNS = (
    "step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K", "pressure_GPa", "volume_A3", "steps_per_s",
)


@dataclasses.dataclass
class MDResult:
    atoms: ase.Atoms  # final state (positions, momenta, cell)
    rows: list[dict[str, float]]  # the log lines, as numbers
    steps: int
    wall_s: float  # time inside the integrator loop
    ms_per_step: float
    stopped: str | None = None  # why the run ended early (the committee's uncertainty threshold), else None
    uncertain_frames: int = 0  # frames written above the uncertainty threshold


def is_3d_periodic(atoms: ase.Atoms) -> bool:
    return bool(np.all(atoms.pbc)) and abs(np.linalg.det(np.asarray(atoms.cell))) > 1e-9


def load_calculator(model_path: str | Path, device: str = "cpu", skin: float = 1.0):
    """``potential.Calculator`` around the model file (errors as ``potential.evaluate.load_model_file``), or
    around a ``potential.Committee`` of a list of two or more model files."""
    from . import Calculator
    from .committee import Committee
    from .evaluate import load_model_file

    paths = model_path if isinstance(model_path, (list, tuple)) else [model_path]
    models = [load_model_file(p, device=device) for p in paths]
    model = models[0] if len(models) == 1 else Committee(models, names=[str(p) for p in paths])
    return Calculator(model, device=device, skin=skin)


def check_elements(atoms: ase.Atoms, elements, name: str = "structure") -> None:
    """ValueError naming the elements of ``atoms`` that the model does not know."""
    known = {int(z) for z in elements}
    unknown = sorted({int(z) for z in atoms.numbers} - known)
    if unknown:
        sym = ", ".join(f"{ase.data.chemical_symbols[z]} (Z={z})" for z in unknown)
        have = ", ".join(ase.data.chemical_symbols[z] for z in sorted(known))
        raise ValueError(f"{name}: element(s) {sym} unknown to the model; the model knows {have}")


def make_dynamics(atoms: ase.Atoms, cfg: MDConfig, name: str = "structure"):
    """Return the ASE dynamics object for ``cfg`` (atoms must carry the calculator)."""
    dt = cfg.timestep * units.fs
    tdamp = (cfg.tdamp if cfg.tdamp is not None else 100.0 * cfg.timestep) * units.fs
    pdamp = (cfg.pdamp if cfg.pdamp is not None else 1000.0 * cfg.timestep) * units.fs
    rng = np.random.default_rng([cfg.seed, 1])  # thermostat noise, independent of the velocity draw
    if cfg.thermostat is not None and cfg.ensemble != "nvt":
        warnings.warn(f"thermostat={cfg.thermostat!r} applies to ensemble nvt only; ignored for {cfg.ensemble}")
    if cfg.barostat is not None and cfg.ensemble != "npt":
        warnings.warn(f"barostat={cfg.barostat!r} applies to ensemble npt only; ignored for {cfg.ensemble}")
    if cfg.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if cfg.ensemble == "nvt":
        thermostat = cfg.thermostat or "langevin"
        if thermostat == "langevin":
            from ase.md.langevin import Langevin

            # ASE >= 3.28: fixcm=True is deprecated (biased sampling); keep the centre of mass with FixCom.
            from ase.constraints import FixCom

            if not any(isinstance(c, FixCom) for c in atoms.constraints):
                atoms.set_constraint([*atoms.constraints, FixCom()])
            return Langevin(
                atoms, dt, temperature_K=cfg.temperature, friction=cfg.friction / units.fs, fixcm=False, rng=rng
            )
        if thermostat == "bussi":
            from ase.md.bussi import Bussi

            return Bussi(atoms, dt, temperature_K=cfg.temperature, taut=tdamp, rng=rng)
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, dt, temperature_K=cfg.temperature, tdamp=tdamp)
    # npt
    if not is_3d_periodic(atoms):
        raise ValueError(
            f"{name}: ensemble npt needs stress, i.e. a 3D-periodic structure with a cell; "
            f"this one has pbc={atoms.pbc.tolist()} and volume {abs(np.linalg.det(np.asarray(atoms.cell))):.3g} Å^3"
        )
    calc = atoms.calc
    if calc is not None and "stress" not in getattr(calc, "implemented_properties", ()):
        raise ValueError(f"ensemble npt needs stress, which calculator {type(calc).__name__} does not implement")
    pressure_au = cfg.pressure * units.GPa
    if (cfg.barostat or "mtk") == "mtk":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        return IsotropicMTKNPT(
            atoms, dt, temperature_K=cfg.temperature, pressure_au=pressure_au, tdamp=tdamp, pdamp=pdamp
        )
    from ase.md.nptberendsen import NPTBerendsen

    return NPTBerendsen(
        atoms, dt, temperature_K=cfg.temperature, pressure_au=pressure_au, taut=tdamp, taup=pdamp,
        compressibility_au=cfg.compressibility / units.GPa,
    )


def open_log(path: str | None, columns=LOG_COLUMNS) -> tuple[IO[str] | None, bool]:
    """The CSV log target for ``path`` (None: no log, "-": stdout, else a new file) with the header written,
    and whether the caller must close it."""
    if path is None:
        return None, False
    if path == "-":
        out, close = sys.stdout, False
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        out, close = open(path, "w"), True
    out.write(",".join(columns) + "\n")
    out.flush()
    return out, close


def run_and_close(run, *outputs) -> float:
    """Wall seconds of run(); each output (progress bar, trajectory writer, log file; None = absent) is closed
    afterwards, also when run() raises, so no file is left half-written and open."""
    t0 = time.perf_counter()
    try:
        run()
    finally:
        wall = time.perf_counter() - t0
        for out in outputs:
            if out is not None:
                out.close()
    return wall


def format_row(row: dict[str, float]) -> str:
    """One CSV log line (LOG_COLUMNS order, newline included)."""
    return (f"{row['step']:d},{row['time_fs']:.3f},{row['epot_eV']:.6f},{row['ekin_eV']:.6f},{row['etot_eV']:.6f},"
            f"{row['temperature_K']:.2f},{row['pressure_GPa']:.5f},{row['volume_A3']:.4f},{row['steps_per_s']:.2f}"
            + (f",{row['max_force_spread_eVA']:.5f}" if "max_force_spread_eVA" in row else "") + "\n")


class CSVLogger:
    """Observer writing one CSV line per call; keeps the rows in memory too (``.rows``)."""

    def __init__(self, dyn, atoms: ase.Atoms, out: IO[str] | None):
        self.dyn, self.atoms, self.out = dyn, atoms, out
        self.rows: list[dict[str, float]] = []
        self.periodic = is_3d_periodic(atoms)
        self._last = None  # (wall time, step) of the previous line

    def __call__(self) -> None:
        atoms, now, step = self.atoms, time.perf_counter(), self.dyn.nsteps
        epot = float(atoms.get_potential_energy())
        ekin = float(atoms.get_kinetic_energy())
        pressure = math.nan
        if self.periodic:  # -trace(stress)/3 with the ideal-gas term, eV/Å^3 -> GPa
            pressure = -float(np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True))) / 3.0 / units.GPa
        rate = math.nan
        if self._last is not None and step > self._last[1] and now > self._last[0]:
            rate = (step - self._last[1]) / (now - self._last[0])
        self._last = (now, step)
        row = {
            "step": step,
            "time_fs": self.dyn.get_time() / units.fs,
            "epot_eV": epot,
            "ekin_eV": ekin,
            "etot_eV": epot + ekin,
            "temperature_K": float(atoms.get_temperature()),
            "pressure_GPa": pressure,
            "volume_A3": float(atoms.get_volume()) if self.periodic else math.nan,
            "steps_per_s": rate,
        }
        if "max_force_spread" in getattr(atoms.calc, "implemented_properties", ()):  # a committee
            row["max_force_spread_eVA"] = float(atoms.calc.get_property("max_force_spread", atoms))
        self.rows.append(row)
        if self.out is not None:
            self.out.write(format_row(row))
            self.out.flush()


class TrajectoryWriter:
    """Writes frames as ASE .traj (ase.io.Trajectory) or extended XYZ (appended), by suffix."""

    def __init__(self, path: str | Path, atoms: ase.Atoms):
        self.path, self.atoms = Path(path), atoms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix.lower() == ".traj":
            from ase.io.trajectory import Trajectory

            self._traj = Trajectory(str(self.path), "w", atoms)
            self._file = None
        else:
            self._traj = None
            self._file = open(self.path, "w")

    def __call__(self) -> None:
        if self._traj is not None:
            self._traj.write(self.atoms)
        else:
            ase.io.write(self._file, self.atoms, format="extxyz")
            self._file.flush()

    def close(self) -> None:
        if self._traj is not None:
            self._traj.close()
        if self._file is not None:
            self._file.close()


def init_velocities(atoms: ase.Atoms, temperature: float, seed: int) -> None:
    """Maxwell-Boltzmann momenta at ``temperature`` K, seeded, then zero net momentum (temperature kept)."""
    rng = np.random.default_rng([seed, 0])
    try:  # ASE >= 3.29; MaxwellBoltzmannDistribution is its deprecated alias
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    else:
        thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)


def run_md(atoms: ase.Atoms, cfg: MDConfig, calculator=None, name: str = "structure") -> MDResult:
    """Run ``cfg.steps`` steps of MD on ``atoms`` (modified in place) and return the log rows.

    ``calculator``: any ASE calculator; default: the model file ``cfg.model`` through
    ``potential.Calculator`` on ``cfg.device``.
    """
    cfg.validate()
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    if calculator is None:
        if cfg.model is None:
            raise ValueError("no model given: set --model (or 'model:' in the config)")
        calculator = load_calculator(cfg.model, device=cfg.device, skin=cfg.skin)
    model = getattr(calculator, "model", None)
    if model is not None and hasattr(model, "elements"):
        check_elements(atoms, model.elements, name)
    atoms.calc = calculator
    init_velocities(atoms, cfg.temperature, cfg.seed)
    dyn = make_dynamics(atoms, cfg, name)

    committee = "max_force_spread" in getattr(calculator, "implemented_properties", ())
    log_file, close_log = open_log(cfg.log, LOG_COLUMNS + (("max_force_spread_eVA",) if committee else ()))
    logger = CSVLogger(dyn, atoms, log_file)
    dyn.attach(logger, interval=cfg.interval)
    traj = None
    if cfg.trajectory is not None:
        traj = TrajectoryWriter(cfg.trajectory, atoms)
        dyn.attach(traj, interval=cfg.interval)

    bar = None
    if cfg.progress and cfg.steps > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, unit="step", desc=f"MD {cfg.ensemble}", disable=None, file=sys.stderr)

        def advance():
            if dyn.nsteps > 0:
                bar.update(1)
                if logger.rows and dyn.nsteps % cfg.interval == 0:
                    r = logger.rows[-1]
                    bar.set_postfix(T=f"{r['temperature_K']:.0f}K", etot=f"{r['etot_eV']:.4f}", refresh=False)

        dyn.attach(advance, interval=1)
    watch, stopped = None, []
    if cfg.uncertainty_threshold is not None:  # after the log and the trajectory, so the stop step is logged
        from .uncertainty import UncertaintyStop, UncertaintyWatch

        watch = UncertaintyWatch(dyn, atoms, cfg.uncertainty_threshold, cfg.uncertainty_action,
                                 cfg.uncertainty_frames)
        dyn.attach(watch, interval=1)

    def go():
        try:
            dyn.run(cfg.steps)
        except Exception as e:
            if watch is None or not isinstance(e, UncertaintyStop):
                raise
            stopped.append(str(e))

    wall = run_and_close(go, bar, traj, log_file if close_log else None)
    steps = dyn.nsteps
    return MDResult(atoms, logger.rows, steps, wall, 1e3 * wall / max(steps, 1), stopped[0] if stopped else None,
                    0 if watch is None else watch.frames)


def run_from_config(cfg: MDConfig, base_dir: str | Path | None = None) -> MDResult:
    """Build the structure named by ``cfg.structure`` and run MD (what ``md.py`` does)."""
    cfg.validate()
    if cfg.structure is None:
        raise ValueError("no structure given: set --structure (or 'structure:' in the config)")
    if cfg.model is None:
        raise ValueError("no model given: set --model (or 'model:' in the config)")
    atoms, name = build_structure(cfg.structure, base_dir=base_dir)
    if cfg.engine == "gpu" and isinstance(cfg.model, list) and len(cfg.model) > 1:
        raise ValueError("engine 'gpu' runs one model; a committee (several --model files) needs --engine ase")
    if cfg.engine == "gpu":
        if isinstance(cfg.model, list):
            cfg.model = cfg.model[0]
        from .evaluate import load_model_file
        from .md_engine import engine_thermostat, run_md_engine

        engine_thermostat(cfg)  # refuse npt / nose-hoover before loading anything
        if cfg.threads is not None:
            import torch

            torch.set_num_threads(cfg.threads)
        return run_md_engine(atoms, cfg, load_model_file(cfg.model, device=cfg.device), name)
    calculator = load_calculator(cfg.model, device=cfg.device, skin=cfg.skin)
    return run_md(atoms, cfg, calculator=calculator, name=name)


def merge_options(file_options: dict[str, Any], cli_options: dict[str, Any], where: str) -> MDConfig:
    """Config-file options overridden by CLI flags that were given (not None)."""
    merged = dict(file_options)
    merged.update({k: v for k, v in cli_options.items() if v is not None})
    return MDConfig.from_dict(merged, where=where)
