"""GPU-resident molecular dynamics of one structure or of many independent ones in a batch.

Positions, momenta and forces live on the model's device as float64 tensors; the host reads them only to log
(`observables`) or write frames (`get_atoms`), plus one flag per step (whether a Verlet list must be rebuilt).
Forces come from `potential.static_step.StaticStep` (padded shapes, device neighbour lists, a CUDA graph on GPU);
on CUDA the integrator's half steps are captured as CUDA graphs too, so a step is a few graph replays.

API (what md.py --engine gpu calls):

    from potential.simulation.dynamics import Dynamics
    dyn = Dynamics(model, atoms_or_list, timestep=1.0, thermostat=None | "langevin" | "baoab" | "bussi",
                   temperature=300.0 or [T_0, ..., T_B-1], friction=0.01, tdamp=100.0, seed=0, skin=1.0,
                   stress=False, device=None)   # device: moves the model there (else the model's device)
    dyn.run(steps, interval=10, callback=fn)   # fn(dyn) after every `interval` steps (and before step 1)
    dyn.observables() -> dict of numpy arrays [B]: epot, ekin, etot (eV), temperature (K), volume (Å^3), and
                         if stress: stress [B, 3, 3] (eV/Å^3, ASE sign, potential part), pressure (GPa, + kinetic)
    dyn.get_atoms() -> list of ase.Atoms (positions, momenta, a SinglePointCalculator with energy/forces)
    dyn.nsteps, dyn.time_fs, dyn.rebuilds, dyn.step()

Wiring md.py --engine gpu (nve, or nvt with langevin / bussi; nose-hoover and npt stay on ASE's integrators):

    model = potential.load_model(path, device="cuda")
    dyn = Dynamics(model, atoms, timestep=cfg.timestep, thermostat=None if cfg.ensemble == "nve" else cfg.thermostat,
                   temperature=cfg.temperature, friction=cfg.friction, tdamp=cfg.tdamp or 100 * cfg.timestep,
                   seed=cfg.seed, skin=cfg.skin, stress=<3D periodic>)
    def log(d):   # one CSV row / trajectory frame per structure: o[key][b]
        o = d.observables(); frames = d.get_atoms()   # d.nsteps, d.time_fs
    dyn.run(cfg.steps, interval=cfg.interval, callback=log)
  and screen.py --engine gpu --relax: potential.simulation.fire.relax_batch(model, atoms_list, fmax, max_steps, batch_atoms=...).

Conventions: ASE units inside (Å, eV, amu, time in ASE units; timestep and tdamp are given in fs, friction in
1/fs). Velocities are taken from the Atoms' momenta (set them with MaxwellBoltzmannDistribution first).
Integrators, each identical to its ASE counterpart for one structure:
  None         NVE velocity Verlet (ase.md.verlet.VelocityVerlet)
  "langevin"   ASE's Langevin scheme (ase.md.langevin.Langevin, fixcm=False): friction, temperature
  "baoab"      BAOAB Langevin splitting (Leimkuhler-Matthews): friction, temperature
  "bussi"      stochastic velocity rescaling then velocity Verlet (ase.md.bussi.Bussi): tdamp, temperature
Every structure of the batch has its own temperature and thermostat state (its own Bussi kinetic energy and
rescaling factor); friction and tdamp are shared. Degrees of freedom per structure: 3 n (as ASE without
constraints). Random numbers: torch's generator on the device, seeded by `seed`; `noise=fn(shape)` replaces
it (fn returns standard normals as a float64 tensor; the tests feed it ASE's numpy draws).
NPT is not integrated here (use ASE's barostats through potential.Calculator); StaticStep.set_cell already
keeps the lists right when a cell changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from data.batch import pack_atoms
from ..static_step import StaticStep

THERMOSTATS = (None, "langevin", "baoab", "bussi")


class _Graphed:
    """fn() run eagerly, or captured once as a CUDA graph and replayed. fn must only launch device work and
    must write its results into preallocated tensors (`state`, updated in place)."""

    def __init__(self, fn, device, enabled: bool, state: Sequence[torch.Tensor], generator=None):
        self.fn, self.device, self.enabled, self.generator = fn, device, enabled, generator
        self.state = state
        self.graph = None

    def __call__(self) -> None:
        if not self.enabled:
            self.fn()
            return
        if self.graph is None:
            saved = [t.clone() for t in self.state]
            stream = torch.cuda.Stream(device=self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):  # warm-up (lazy initialisation), then the state is put back
                self.fn()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for t, v in zip(self.state, saved):
                t.copy_(v)
            graph = torch.cuda.CUDAGraph()
            if self.generator is not None:
                graph.register_generator_state(self.generator)
            with torch.cuda.graph(graph):
                self.fn()
            self.graph = graph
        self.graph.replay()


class Dynamics:
    """Batched, device-resident NVE / NVT integrator (see the module docstring)."""

    def __init__(self, model, atoms, timestep: float = 1.0, thermostat: str | None = None,
                 temperature: float | Sequence[float] | None = None, friction: float = 0.01, tdamp: float = 100.0,
                 seed: int = 0, skin: float = 1.0, stress: bool = False, cuda_graph: bool | None = None,
                 noise=None, headroom: float = 1.1, device=None, contraction: str = "auto"):
        if thermostat not in THERMOSTATS:
            raise ValueError(f"Dynamics: thermostat={thermostat!r}: choose one of {THERMOSTATS}")
        atoms_list = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        for k, a in enumerate(atoms_list):
            if a.constraints:
                raise ValueError(f"Dynamics: structure {k} has constraints {a.constraints}; the device engine has "
                                 "none (run it through ASE with potential.Calculator)")
        if device is not None:
            model = model.to(device)
        self.device = device = next(model.parameters()).device
        state = pack_atoms(atoms_list, device)
        self.atoms_list = atoms_list
        self.ptr = state["ptr"].tolist()  # [B+1] atom offsets
        self.num_structures = b = len(self.ptr) - 1
        self.numbers, self.pbc, self.cell = state["numbers"], state["pbc"], state["cell"]
        self.positions = state["positions"]  # [N, 3] Å
        self.momenta = state["momenta"]  # [N, 3] amu Å / ASE time
        self.masses = state["masses"][:, None]  # [N, 1] amu
        sizes = state["ptr"].diff()  # [B] atoms per structure
        self.structure = state["batch"]  # [N] structure of each atom
        self.ndof = (3 * sizes).to(torch.float64)  # [B]
        self.dt = float(timestep) * units.fs
        self.thermostat = thermostat
        if thermostat is not None:
            if temperature is None:
                raise ValueError(f"Dynamics: thermostat {thermostat!r} needs a temperature (K)")
            temps = np.broadcast_to(np.asarray(temperature, dtype=np.float64), (b,))
            if np.any(temps < 0) or not np.all(np.isfinite(temps)):
                raise ValueError(f"Dynamics: temperature must be finite and >= 0 K, got {temperature!r}")
            self.kT = torch.tensor(temps * units.kB, dtype=torch.float64, device=device)  # [B] eV
            if not friction > 0 and thermostat in ("langevin", "baoab"):
                raise ValueError(f"Dynamics: friction must be > 0 (1/fs), got {friction}")
            if not tdamp > 0 and thermostat == "bussi":
                raise ValueError(f"Dynamics: tdamp must be > 0 (fs), got {tdamp}")
            if thermostat == "bussi":
                ekin0 = [float((a.get_kinetic_energy())) for a in atoms_list]
                if min(ekin0) <= 1e-12:
                    raise ValueError(f"Dynamics: Bussi needs non-zero initial velocities (structure "
                                     f"{int(np.argmin(ekin0))} has none); draw them with MaxwellBoltzmannDistribution")
        self.friction = float(friction) / units.fs  # 1 / ASE time
        self.tdamp = float(tdamp) * units.fs
        self.static = StaticStep(model, self.numbers, self.ptr, self.cell, self.pbc, skin=skin, stress=stress,
                                 cuda_graph=cuda_graph, headroom=headroom, contraction=contraction)
        self.stress = bool(stress)
        use_graphs = self.static.cuda_graph and noise is None
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))
        if use_graphs:
            try:  # a private generator must be registered with each graph that draws from it
                torch.cuda.CUDAGraph().register_generator_state(self.generator)
            except (AttributeError, RuntimeError, TypeError):
                self.generator = None  # this torch captures only the default generator (then unseeded here)
        self._noise = noise if noise is not None else self._randn
        self._setup_thermostat()
        self.forces = torch.zeros_like(self.positions)  # [N, 3] eV/Å
        self.energy = torch.zeros(b, dtype=torch.float64, device=device)  # [B] eV
        self.stress_tensor = torch.zeros(b, 3, 3, dtype=torch.float64, device=device)
        self.nsteps = 0
        n = self.positions.shape[0]
        self._rnd_pos = torch.zeros(n, 3, dtype=torch.float64, device=device)  # Langevin noise of this step
        self._rnd_vel = torch.zeros(n, 3, dtype=torch.float64, device=device)
        self._evaluate()
        state = [self.positions, self.momenta, self._rnd_pos, self._rnd_vel]
        gen = self.generator if thermostat is not None else None
        self._pre = _Graphed(self._pre_step, device, use_graphs, state, gen)
        self._post = _Graphed(self._post_step, device, use_graphs, state)

    # ------------------------------------------------------------------ helpers
    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, dtype=torch.float64, device=self.device, generator=self.generator)

    def _per_atom(self, values: torch.Tensor) -> torch.Tensor:
        """[B] -> [N, 1]"""
        return values[self.structure][:, None]

    def _segment_sum(self, values: torch.Tensor) -> torch.Tensor:
        """[N] -> [B]"""
        out = torch.zeros(self.num_structures, dtype=values.dtype, device=self.device)
        return out.index_add(0, self.structure, values)

    def _setup_thermostat(self) -> None:
        dt, fr = self.dt, self.friction
        if self.thermostat == "langevin":  # ase.md.langevin.Langevin.updatevars, per atom
            sigma = torch.sqrt(2.0 * self._per_atom(self.kT) * fr / self.masses)  # [N, 1]
            self.c1 = dt / 2.0 - dt * dt * fr / 8.0
            self.c2 = dt * fr / 2 - dt * dt * fr * fr / 8.0
            self.c3 = math.sqrt(dt) * sigma / 2.0 - dt**1.5 * fr * sigma / 8.0
            self.c5 = dt**1.5 * sigma / (2 * math.sqrt(3))
            self.c4 = fr / 2.0 * self.c5
        elif self.thermostat == "baoab":
            self.c_o = math.exp(-fr * dt)
            self.sigma_o = math.sqrt(1.0 - self.c_o**2) * torch.sqrt(self._per_atom(self.kT) * self.masses)  # [N, 1]
        elif self.thermostat == "bussi":
            self.exp_term = math.exp(-dt / self.tdamp)
            self.target_ekin = 0.5 * self.kT * self.ndof  # [B] eV
            # the first atom's x noise of each structure is Bussi's R1; the other 3n-1 give the chi-squared sum
            first = torch.zeros(self.positions.shape[0], 3, dtype=torch.bool, device=self.device)
            first[torch.tensor(self.ptr[:-1], device=self.device), 0] = True
            self.first_noise = first

    def _evaluate(self) -> None:
        out = self.static(self.positions)  # its neighbour-list check is a graph of its own
        self.forces.copy_(out["forces"])
        self.energy.copy_(out["energy"])
        if self.stress:
            self.stress_tensor.copy_(out["stress"])

    # ------------------------------------------------------------------ one step
    def _pre_step(self) -> None:
        """Everything up to the new positions."""
        dt, p, x, m, f = self.dt, self.momenta, self.positions, self.masses, self.forces
        if self.thermostat == "langevin":
            noise = self._noise((2,) + tuple(x.shape))  # xi, eta as ASE draws them
            self._rnd_pos.copy_(self.c5 * noise[1])
            self._rnd_vel.copy_(self.c3 * noise[0] - self.c4 * noise[1])
            v = p / m
            v += self.c1 * f / m - self.c2 * v + self._rnd_vel
            x += dt * v + self._rnd_pos
            p.copy_(v * m)
        elif self.thermostat == "baoab":
            p += 0.5 * dt * f
            x += 0.5 * dt * p / m
            p.mul_(self.c_o).add_(self.sigma_o * self._noise(tuple(x.shape)))
            x += 0.5 * dt * p / m
        else:
            if self.thermostat == "bussi":  # ase.md.bussi.Bussi.scale_velocities, per structure
                ekin = self._segment_sum((p * p / m).sum(dim=1)) * 0.5  # [B] eV
                noise = self._noise(tuple(x.shape))
                r1 = self._segment_sum((noise * self.first_noise).sum(dim=1))  # [B]
                chi2 = self._segment_sum((noise * noise).sum(dim=1)) - r1 * r1  # [B], 3n - 1 dof
                c = (1.0 - self.exp_term) * self.target_ekin / ekin / self.ndof
                alpha = torch.sqrt(self.exp_term + c * (chi2 + r1 * r1) + 2 * r1 * torch.sqrt(self.exp_term * c))
                p.mul_(self._per_atom(alpha))
            p += 0.5 * dt * f
            x += dt * p / m

    def _post_step(self) -> None:
        """The second half kick with the new forces."""
        p, m, f = self.momenta, self.masses, self.forces
        if self.thermostat == "langevin":
            v = p / m
            v += self.c1 * f / m - self.c2 * v + self._rnd_vel
            p.copy_(v * m)
        else:
            p += 0.5 * self.dt * f

    def step(self) -> None:
        """Advance every structure by one timestep."""
        self._pre()
        self._evaluate()
        self._post()
        self.nsteps += 1

    def run(self, steps: int, interval: int = 0, callback=None) -> None:
        """`steps` steps; callback(self) before the first and after every `interval` steps (0: never)."""
        if callback is not None and interval > 0 and self.nsteps == 0:
            callback(self)
        for _ in range(int(steps)):
            self.step()
            if callback is not None and interval > 0 and self.nsteps % interval == 0:
                callback(self)

    # ------------------------------------------------------------------ host views
    @property
    def time_fs(self) -> float:
        return self.nsteps * self.dt / units.fs

    @property
    def rebuilds(self) -> int:
        return self.static.rebuilds

    def kinetic_energy(self) -> torch.Tensor:
        """[B] eV (device)."""
        return 0.5 * self._segment_sum((self.momenta * self.momenta / self.masses).sum(dim=1))

    def observables(self) -> dict:
        """Host copies [B]: epot, ekin, etot (eV), temperature (K), volume (Å^3; nan unless 3D periodic);
        with stress=True also stress [B, 3, 3] (eV/Å^3, potential part, ASE sign) and pressure (GPa, with the
        kinetic term, as ASE's barostats see it; nan unless 3D periodic)."""
        ekin = self.kinetic_energy()
        out = {"epot": self.energy.cpu().numpy(), "ekin": ekin.cpu().numpy()}
        out["etot"] = out["epot"] + out["ekin"]
        out["temperature"] = (2.0 * ekin / (self.ndof * units.kB)).cpu().numpy()
        periodic = self.static.periodic.cpu().numpy()
        volume = np.abs(np.linalg.det(self.cell.cpu().numpy()))
        out["volume"] = np.where(periodic, volume, np.nan)
        if self.stress:
            stress = self.stress_tensor.cpu().numpy()
            kinetic = np.divide(2.0 * out["ekin"] / 3.0, volume, out=np.zeros_like(volume), where=periodic)
            out["stress"] = stress
            out["pressure"] = np.where(periodic, (-np.trace(stress, axis1=1, axis2=2) / 3.0 + kinetic) / units.GPa,
                                       np.nan)
        return out

    def get_atoms(self) -> list[Atoms]:
        """Copies of the input Atoms at the current state, with energy and forces attached."""
        positions = self.positions.cpu().numpy()
        momenta = self.momenta.cpu().numpy()
        forces = self.forces.cpu().numpy()
        energy = self.energy.cpu().numpy()
        out = []
        for b, atoms in enumerate(self.atoms_list):
            lo, hi = self.ptr[b], self.ptr[b + 1]
            a = atoms.copy()
            a.positions = positions[lo:hi]
            a.set_momenta(momenta[lo:hi], apply_constraint=False)
            a.calc = SinglePointCalculator(a, energy=float(energy[b]), forces=forces[lo:hi].copy())
            out.append(a)
        return out
