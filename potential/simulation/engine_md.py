"""``md.py --engine gpu``: the same run as ``potential.simulation.ase_md.run_md``, on the device-resident engine.

``potential.simulation.dynamics.Dynamics`` keeps positions, momenta and forces on the model's device and syncs to the host
only every ``interval`` steps, to write the log line and the trajectory frame. It integrates NVE (velocity Verlet)
and NVT with ASE's Langevin scheme or Bussi's rescaling, step for step as ASE does. Nose-Hoover and NPT have no
device integrator, so they stay on ``--engine ase``. The engine runs on the CPU too (eagerly, no CUDA graphs),
which is how CI tests it. The log has the columns of ``md_output.LOG_COLUMNS``.
"""

from __future__ import annotations

import math
import sys
import time

import ase

from .md_config import MDConfig
from data.structure import is_3d_periodic

from .md_output import MDResult, TrajectoryWriter, check_elements, format_row, init_velocities, open_log, run_and_close

ENGINE_THERMOSTATS = {"nve": None, "langevin": "langevin", "bussi": "bussi"}


def engine_thermostat(cfg: MDConfig) -> str | None:
    """The Dynamics thermostat for ``cfg``; ValueError for what the device engine does not integrate."""
    if cfg.ensemble == "npt":
        raise ValueError("engine 'gpu' integrates nve and nvt (langevin, bussi); for npt use --engine ase")
    if cfg.ensemble == "nve":
        return None
    name = cfg.thermostat or "langevin"
    if name not in ENGINE_THERMOSTATS:
        raise ValueError(f"engine 'gpu' has no {name!r} thermostat (it has langevin and bussi); "
                         "use --engine ase for nose-hoover")
    return ENGINE_THERMOSTATS[name]


def run_md_engine(atoms: ase.Atoms, cfg: MDConfig, model, name: str = "structure") -> MDResult:
    """Run ``cfg.steps`` steps on the device engine; ``atoms`` ends in the final state, like ASE's integrators."""
    from .dynamics import Dynamics

    thermostat = engine_thermostat(cfg)
    check_elements(atoms, model.elements, name)
    init_velocities(atoms, cfg.temperature, cfg.seed)
    periodic = is_3d_periodic(atoms)
    dyn = Dynamics(model, atoms, timestep=cfg.timestep, thermostat=thermostat, temperature=cfg.temperature,
                   friction=cfg.friction, tdamp=cfg.tdamp if cfg.tdamp is not None else 100.0 * cfg.timestep,
                   seed=cfg.seed, skin=cfg.skin, stress=periodic)
    log_file, close_log = open_log(cfg.log)
    traj = TrajectoryWriter(cfg.trajectory, atoms) if cfg.trajectory is not None else None
    rows: list[dict[str, float]] = []
    last = [time.perf_counter(), 0]  # wall time and step of the previous log line

    bar = None
    if cfg.progress and cfg.steps > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, unit="step", desc=f"MD {cfg.ensemble} (engine gpu)", disable=None,
                   file=sys.stderr)

    def log(d) -> None:  # called before step 1 and after every `interval` steps
        now, step = time.perf_counter(), d.nsteps
        rate = (step - last[1]) / (now - last[0]) if step > last[1] and now > last[0] else math.nan
        last[:] = [now, step]
        o = d.observables()  # numpy [1] each: one structure
        row = {"step": step, "time_fs": d.time_fs, "epot_eV": float(o["epot"][0]), "ekin_eV": float(o["ekin"][0]),
               "etot_eV": float(o["etot"][0]), "temperature_K": float(o["temperature"][0]),
               "pressure_GPa": float(o["pressure"][0]) if periodic else math.nan,
               "volume_A3": float(o["volume"][0]), "steps_per_s": rate}
        rows.append(row)
        if log_file is not None:
            log_file.write(format_row(row))
            log_file.flush()
        if traj is not None:
            traj.atoms = d.get_atoms()[0]
            traj()
        if bar is not None and step > 0:
            bar.update(step - bar.n)
            bar.set_postfix(T=f"{row['temperature_K']:.0f}K", etot=f"{row['etot_eV']:.4f}", refresh=False)

    wall = run_and_close(lambda: dyn.run(cfg.steps, interval=cfg.interval, callback=log), bar, traj,
                         log_file if close_log else None)
    final = dyn.get_atoms()[0]
    atoms.positions = final.positions
    atoms.set_momenta(final.get_momenta(), apply_constraint=False)
    atoms.calc = final.calc
    return MDResult(atoms, rows, cfg.steps, wall, 1e3 * wall / max(cfg.steps, 1))
