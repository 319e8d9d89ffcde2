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

The log's columns: potential.simulation.md_output.
"""

from __future__ import annotations

import sys
import warnings

import ase
import ase.data
import ase.io
import numpy as np
from ase import units

from data.structure import is_3d_periodic

from .md_config import MDConfig
from .uncertainty import UncertaintyStop, UncertaintyWatch
from .md_output import (LOG_COLUMNS, CSVLogger, MDResult, TrajectoryWriter, check_elements, init_velocities, load_calculator,
                        open_log, run_and_close)


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
        watch = UncertaintyWatch(dyn, atoms, cfg.uncertainty_threshold, cfg.uncertainty_action,
                                 cfg.uncertainty_frames)
        dyn.attach(watch, interval=1)

    def go():
        try:
            dyn.run(cfg.steps)
        except UncertaintyStop as e:
            if watch is None:
                raise
            stopped.append(str(e))

    wall = run_and_close(go, bar, traj, log_file if close_log else None)
    steps = dyn.nsteps
    return MDResult(atoms, logger.rows, steps, wall, 1e3 * wall / max(steps, 1), stopped[0] if stopped else None,
                    0 if watch is None else watch.frames)


