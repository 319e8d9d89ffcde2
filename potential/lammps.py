"""LAMMPS coupling through ML-IAP's "unified" Python interface (``pair_style mliap unified FILE 1``).

Export a model file once, then load the result in any LAMMPS built with ML-IAP's Python coupling:

    python -m potential.lammps model.pt model-lammps.pkl          # [--dtype float32|float64] [--device cuda|cpu]

    units metal                          # eV, Å, ps; forces eV/Å, pressure bar
    atom_style atomic
    newton on                            # ML-IAP needs it (the default)
    comm_modify cutoff 10.0              # >= num_interactions x r_max + skin: 2 x 4 Å + 2 Å (the export prints it)
    pair_style mliap unified model-lammps.pkl 1     # 1 = ghostneigh: ghost atoms get neighbour lists too
    pair_coeff * * Cu O                  # element of each atom type, in type order

How one model file gives exact multi-layer energies across MPI ranks (no decomposition of our own):
with ``ghostneigh 1`` LAMMPS gives every atom it holds, owned and ghost, a neighbour list (pairs i <- j with
r_ij = x_j - x_i inside r_max). We run the whole message passing on that graph, owned and ghost nodes alike, and
sum the per-atom energies of the owned atoms only. An owned atom's energy after T interactions depends on the
positions within T * r_max of it, and the features of a ghost within (T - 1) * r_max are exact when all atoms
within r_max of it are present, hence the communication cutoff T * r_max (+ the neighbour skin, because the
ghosts are chosen at the last neighbour-list build). Ghosts farther out have truncated lists; their features are
wrong but reach no owned energy: we keep only the pairs whose atom i is at most T - 1 hops from an owned atom
(``needed_edges``), which is exact and skips most of the ghost shell. The pair gradients dE_owned/dr_ij of every pair, ghost pairs included, go back
through ``update_pair_forces``: LAMMPS adds +g to atom i and -g to atom j (F_j = -dE/dr_ij), then its reverse
communication moves the ghosts' forces to their owners, and it tallies the virial -sum_ij r_ij (x) g_ij
(thermo press, compute pressure). Summed over ranks this is the energy, forces and virial of the whole system.
A one-layer model needs neither ghostneigh nor the larger cutoff (``pair_style mliap unified FILE 0`` works).

Per-atom energies go to LAMMPS's ``eatoms`` (compute pe/atom). The element list handed to LAMMPS is the whole
periodic table, so a ``pair_coeff`` naming any element is accepted, and an atom of an element the model does not
know stops the run with a Python error that names it (LAMMPS's own check would say only "Incorrect args for
pair coefficients"). Requires ``newton on`` and real element names (no NULL types).

Device: CUDA when torch sees a GPU (our fused Triton kernels through the "auto" backend), else the CPU and the
reference ops; override with TUMBLER_LAMMPS_DEVICE=cpu|cuda|cuda:N.

Kokkos (``-k on ... -sf kk``: ``pair_style mliap/kk``, the same file and lines): the same ghostneigh algorithm
(4Feb2025's mliap/kk takes ghostneigh and builds full ghost lists: pair_mliap_kokkos.cpp:192-198,
pair_mliap.cpp:346, npair_kokkos.h:26-29, mliap_data_kokkos.cpp:205; its data object has no
forward_exchange, which we do not need). Its data object (KOKKOS/mliap_unified_couple_kokkos.pyx) hands out
views of LAMMPS's arrays: numpy with a host backend (Serial, OpenMP), cupy on a GPU, shared with torch without
a copy; its ``eatoms`` has no setter, so we fill that view in place (``is_kokkos``). On a GPU, Kokkos and torch
may use different CUDA streams, so we synchronise before reading LAMMPS's arrays and before handing ours back.
Tested: tests/lammps run on a host-Kokkos LAMMPS when tools/build_lammps.sh has built one (it needs Kokkos
4.5.01's source, which Debian's LAMMPS source leaves out). No Kokkos build has run yet, so this branch is written
from the 4Feb2025 sources and untested, on the host and on a GPU.

The exported file is a pickle of a ``LAMMPSPotential`` that holds the model's config and weights only (the model
is rebuilt on first use), so unpickling needs tumbler importable in LAMMPS's Python. LAMMPS 4Feb2025 reads a name ending in .pt/.pth with a bare ``torch.load``, which
torch >= 2.6 refuses for a pickled object (weights_only); so name the file e.g. *.pkl, which LAMMPS unpickles.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

import kernels
from data.atomic import atomic_path

from .io import read_model_file
from .model import ModelConfig, Potential, calling_thread_backward

FORMAT = "tumbler-lammps-mliap"
FORMAT_VERSION = 1
ELEMENTS = chemical_symbols[1:]  # what LAMMPS may name in pair_coeff: element index k is atomic number k + 1


class LAMMPSPotential:
    """A tumbler model as an ML-IAP unified object: the attributes LAMMPS reads (element_types, rcutfac,
    ndescriptors, nparams, interface) and the three compute hooks, of which compute_forces does all the work.

    Pickles as the model's config and weights only; the Potential is rebuilt on first use, on ``device``."""

    def __init__(self, config: dict, state_dict: dict, device: str | None = None):
        ModelConfig.from_dict(dict(config))  # fail at export time, not in LAMMPS
        self.config = dict(config)
        self.state_dict = {k: v.detach().cpu() for k, v in state_dict.items()}
        self.device = device
        self.element_types = list(ELEMENTS)
        self.rcutfac = 0.5 * float(self.config["r_max"])  # ML-IAP's pair cutoff is 2 * rcutfac (element radii 1)
        self.ndescriptors = 1  # ML-IAP insists on at least one; we keep no descriptors
        self.nparams = 1
        self.interface = None  # set by LAMMPS when it loads the file
        self._model = None

    @classmethod
    def from_file(cls, path, dtype: str | None = None, device: str | None = None) -> "LAMMPSPotential":
        """From a tumbler model file (``potential.save_model``); ``dtype`` overrides the model's dtype."""
        payload = read_model_file(path)
        config = dict(payload["config"])
        if dtype is not None:
            config["dtype"] = dtype
        config["backend"] = "auto"  # Triton kernels on CUDA tensors, reference ops on the CPU
        return cls(config, payload["state_dict"], device)

    def __getstate__(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config,
                "state_dict": self.state_dict, "device": self.device}

    def __setstate__(self, state: dict) -> None:
        if state.get("format") != FORMAT or state.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} object of version <= {FORMAT_VERSION}: format "
                             f"{state.get('format')!r}, version {state.get('format_version')!r}; re-export it "
                             f"with `python -m potential.lammps model.pt out.pkl` of this tumbler")
        self.__init__(state["config"], state["state_dict"], state["device"])

    @property
    def num_interactions(self) -> int:
        return int(self.config["num_interactions"])

    @property
    def r_max(self) -> float:
        return float(self.config["r_max"])

    def model(self, device: torch.device) -> Potential:
        """The Potential on ``device`` (built once; weights frozen: LAMMPS needs forces only)."""
        if self._model is None or self._model.atomic_energies.device != device:
            model = Potential(ModelConfig.from_dict(dict(self.config)))
            model.load_state_dict(self.state_dict, strict=True)
            model = model.to(device).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._model = model
        return self._model

    def _device(self, rij) -> torch.device:
        """Where to compute: that of LAMMPS's arrays when they live on a GPU (Kokkos), else the setting."""
        if hasattr(rij, "__cuda_array_interface__"):
            return torch.device("cuda", torch.cuda.current_device())
        wanted = os.environ.get("TUMBLER_LAMMPS_DEVICE") or self.device
        if wanted:
            return torch.device(wanted)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ------------------------------------------------------------- the ML-IAP unified hooks
    def compute_descriptors(self, data) -> None:
        """Nothing to do: the model works on the pair list directly (compute_forces)."""

    def compute_gradients(self, data) -> None:
        """Nothing to do: energies and pair gradients come from one autograd pass (compute_forces)."""

    def compute_forces(self, data) -> None:
        """Per-atom energies, total energy and pair forces of the atoms this rank owns (module docstring)."""
        if data.nlistatoms == 0:  # a rank that owns no atom: zero energy, and no pair gradient
            data.energy = 0.0
            return
        if data.natomneigh == data.nlistatoms and data.ntotal > data.nlocal and self.num_interactions > 1:
            cut = self.num_interactions * self.r_max
            raise RuntimeError(
                f"tumbler: this model has {self.num_interactions} interaction layers, so ghost atoms need "
                f"neighbour lists: use `pair_style mliap unified FILE 1` (ghostneigh) and `comm_modify cutoff "
                f"{cut:g}` plus the neighbour skin ({self.num_interactions} x r_max {self.r_max:g} Å + skin)")
        npairs = int(data.npairs)
        lammps_rij = data.rij if npairs else np.zeros((0, 3))  # LAMMPS's arrays are NULL before the first pair
        on_gpu = hasattr(lammps_rij, "__cuda_array_interface__")  # Kokkos on a GPU: LAMMPS's arrays are cupy
        device = self._device(lammps_rij)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # Kokkos may still be writing its arrays on its own stream
        as_index = lambda a: torch.as_tensor(a, device=device).to(torch.int64)  # noqa: E731
        elems = as_index(data.elems)  # [ntotal] element index per atom (owned first, then ghosts)
        receivers = as_index(data.pair_i if npairs else np.zeros(0, np.int32))  # [P] atom i of each pair
        senders = as_index(data.pair_j if npairs else np.zeros(0, np.int32))  # [P] its neighbour j
        owned = as_index(data.iatoms)[:data.nlistatoms]  # [n] the owned atoms of the list, in eatoms order
        rij = torch.as_tensor(lammps_rij, device=device).to(torch.float64).requires_grad_(True)  # [P, 3] Å

        model = self.model(device)
        species = model.species_index(elems + 1)  # ValueError naming any element the model does not know
        edges = needed_edges(senders, receivers, owned, int(data.ntotal), self.num_interactions)  # [E]
        edges = edges[torch.argsort(receivers[edges], stable=True)]  # our conv wants receiver-sorted edges
        graph = kernels.make_graph(senders[edges], receivers[edges], int(data.ntotal))
        with torch.enable_grad(), calling_thread_backward():
            vec = rij.index_select(0, edges).to(model.dtype)  # [E, 3] Å, sender minus receiver
            node_energy = model.node_energies(species, vec, graph)  # [ntotal] eV, float64
            owned_energy = node_energy.index_select(0, owned)  # [n] eV
            energy = owned_energy.sum()
            (grad,) = torch.autograd.grad(energy, rij, allow_unused=True)  # dE_owned / dr_ij [P, 3] eV/Å
        fij = torch.zeros_like(rij) if grad is None else grad  # 0 for the pairs left out
        fij = fij.detach().to(torch.float64).contiguous()
        owned_energy = owned_energy.detach()
        if is_kokkos(data):  # eatoms is a getter-only view of LAMMPS's array: fill it in place
            eatoms = lammps_view(data.eatoms)  # [n] eV
            eatoms.copy_(owned_energy)
            if eatoms.is_cuda:
                torch.cuda.synchronize(eatoms.device)  # Kokkos reads it next, possibly on another stream
        else:  # the plain build: eatoms is write-only, and copies what it is given
            data.eatoms = owned_energy.cpu().numpy()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # LAMMPS reads fij next, possibly on another stream
        if npairs:  # (an empty array has no first element to point LAMMPS at)
            # a GPU Kokkos build takes the device pointer of a tensor; the others a float64 numpy array
            data.update_pair_forces(fij if on_gpu else fij.cpu().numpy())
        data.energy = float(energy.detach())


KOKKOS_MODULE = "mliap_unified_couple_kokkos"  # LAMMPS's Cython module of mliap/kk (lammps.mliap.loader)


def is_kokkos(data) -> bool:
    """Whether ``data`` is the Kokkos build's data object (lammps/src/KOKKOS/mliap_unified_couple_kokkos.pyx,
    4Feb2025): its arrays are views of LAMMPS's (numpy with a host backend, cupy on a GPU) and ``eatoms`` has
    a getter only, where the plain build's (ML-IAP/mliap_unified_couple.pyx) has a setter only."""
    return type(data).__module__ == KOKKOS_MODULE


def lammps_view(array) -> torch.Tensor:
    """A tensor sharing the memory of one of LAMMPS's arrays, where it lies: a cupy array on its GPU, a numpy
    one on the host (never a copy: LAMMPS reads that memory afterwards)."""
    if hasattr(array, "__cuda_array_interface__"):
        return torch.as_tensor(array)  # on the array's own device, whatever device the model ran on
    return torch.from_numpy(array)


def needed_edges(senders: torch.Tensor, receivers: torch.Tensor, owned: torch.Tensor, num_nodes: int,
                 num_interactions: int) -> torch.Tensor:
    """Ids [E] of the pairs that the owned atoms' energies depend on: those whose receiver is at most
    num_interactions - 1 hops from an owned atom. Layer t of an atom reads layer t - 1 of its senders, so the
    energies of `owned` read the features of the atoms up to T - 1 hops away, each built from its incoming
    pairs. The others (most of a thick ghost shell, and for one layer every ghost's pairs) contribute nothing
    and are left out, exactly. senders, receivers [P] and owned [n] index the num_nodes atoms."""
    near = torch.zeros(num_nodes, dtype=torch.bool, device=receivers.device)  # [N]
    near[owned] = True
    for _ in range(num_interactions - 1):
        near[senders[near[receivers]]] = True  # one more hop out
    return torch.nonzero(near[receivers]).squeeze(1)


def comm_cutoff(num_interactions: int, r_max: float, skin: float = 2.0) -> float:
    """The smallest exact LAMMPS communication cutoff (Å) for ghostneigh: num_interactions * r_max + skin."""
    return num_interactions * r_max + skin


def export(model_path, out_path, dtype: str | None = None, device: str | None = None) -> LAMMPSPotential:
    """Write the file that ``pair_style mliap unified`` loads (a pickle), atomically; returns the object."""
    unified = LAMMPSPotential.from_file(model_path, dtype=dtype, device=device)
    unified.model(torch.device("cpu"))  # the weights must load into the config's model, or fail here
    unified._model = None
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        pickle.dump(unified, f, protocol=pickle.HIGHEST_PROTOCOL)
    return unified


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m potential.lammps",
        description="Write a tumbler model as the file LAMMPS loads with `pair_style mliap unified FILE 1`.")
    parser.add_argument("model", help="tumbler model file (potential.save_model)")
    parser.add_argument("output", help="file for LAMMPS, e.g. model-lammps.pkl (not .pt/.pth, see below)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="model dtype in LAMMPS (default: saved)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when torch sees a GPU, else cpu; "
                                         "env TUMBLER_LAMMPS_DEVICE overrides it at run time)")
    args = parser.parse_args(argv)
    if str(args.output).endswith((".pt", ".pth")):
        parser.error(f"output '{args.output}': LAMMPS 4Feb2025 opens *.pt/*.pth with a bare torch.load, which "
                     f"torch >= 2.6 refuses for a pickled object; use another suffix, e.g. .pkl")
    unified = export(args.model, args.output, dtype=args.dtype, device=args.device)
    t, r = unified.num_interactions, unified.r_max
    elements = " ".join(chemical_symbols[z] for z in unified.config["elements"])
    print(f"wrote {args.output}: {t} interaction layer(s), r_max {r:g} Å, elements {elements}\n"
          f"LAMMPS input (units metal, newton on):\n"
          f"  comm_modify cutoff {comm_cutoff(t, r):g}    # {t} x r_max + skin 2 (metal default); more if a larger skin\n"
          f"  pair_style mliap unified {args.output} 1\n"
          f"  pair_coeff * * <element of type 1> <element of type 2> ...")
    return 0


if __name__ == "__main__":
    # run as `python -m potential.lammps`: call the importable module's main, so that the pickled class is
    # potential.lammps.LAMMPSPotential and not __main__.LAMMPSPotential
    from potential.lammps import main as _main

    sys.exit(_main())
