"""Fine-tuning (model.init_from, training.freeze; potential/training/finetune.py) on tiny EMT sets, CPU.

The headline test: a model trained on EMT Cu, fine-tuned on 6 Cu-Ag cells, has lower force errors on held-out
Cu-Ag cells than the same model trained from scratch on those 6 cells for the same number of epochs."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

import data
from potential import evaluate, load_model
from potential.training.config import ConfigError
from potential.training.finetune import transfer
from potential.training import Trainer, run

TINY = {"num_threads": 1}


def cuag_structures(n: int, seed: int):
    """`n` rattled, strained 4-atom fcc cells with 1 or 2 Ag atoms among Cu, labelled by EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
        atoms.numbers[rng.choice(4, rng.integers(1, 3), replace=False)] = 47
        atoms.set_cell(atoms.cell * (1 + 0.02 * rng.normal()), scale_atoms=True)
        atoms.positions += 0.08 * rng.normal(size=atoms.positions.shape)
        atoms.calc = EMT()
        out.append(data.Structure(positions=atoms.positions, numbers=atoms.numbers, cell=np.array(atoms.cell),
                                  pbc=atoms.pbc, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                  stress=atoms.get_stress(voigt=False), index=i))
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, emt):
    """A tiny model trained on 16 EMT Cu cells (8 epochs), and the folder of the Cu-Ag sets."""
    from potential.training.config import parse_config

    folder = tmp_path_factory.mktemp("finetune")
    data.write_dataset(folder / "cu.h5", emt(16, seed=5))
    data.write_dataset(folder / "cuag.h5", cuag_structures(8, seed=1))
    cfg = parse_config(_raw(folder / "cu.h5", folder / "pre", epochs=8))
    run(cfg)
    return folder


def _raw(train, out, epochs, **sections):
    raw = {"data": {"train": str(train), "valid_fraction": 0.25},
           "model": {"channels": 8, "lmax": 1, "lmax_sh": 2, "correlation": 2, "num_interactions": 1, "r_max": 3.0,
                     "num_bessel": 4, "radial_hidden": [8], "readout_hidden": 4},
           "training": {"batch_size": 2, "max_epochs": epochs, "lr": 0.02, "ema_decay": 0.9, "energy_weight": 10.0,
                        "forces_weight": 10.0, "scheduler": "none"},
           "output_dir": str(out), "device": "cpu", "dtype": "float64", "seed": 1, **TINY}
    for section, values in sections.items():
        raw[section].update(values)
    return raw


def _force_rmse(model, structures) -> float:
    results = evaluate(structures, model)
    diff = np.concatenate([r["forces"] - s.forces for r, s in zip(results, structures)])
    return float(np.sqrt((diff ** 2).mean()))


def test_finetune_beats_scratch(pretrained, tmp_path, capsys):
    from potential.training.config import parse_config

    epochs = 6
    fine = parse_config(_raw(pretrained / "cuag.h5", tmp_path / "fine", epochs,
                             model={"init_from": str(pretrained / "pre" / "model.pt"), "channels": 99}))
    run(fine)
    log = (tmp_path / "fine" / "train.log").read_text()
    assert "E0s refit on the new data" in log and "shift refit on the new data" in log
    assert "fresh embeddings: Ag" in log
    run(parse_config(_raw(pretrained / "cuag.h5", tmp_path / "scratch", epochs)))
    test = cuag_structures(12, seed=2)
    tuned, scratch = load_model(tmp_path / "fine" / "model.pt"), load_model(tmp_path / "scratch" / "model.pt")
    assert tuned.config.channels == 8  # the source's architecture, not the config's 99
    assert tuned.elements == [29, 47]
    rmse_tuned, rmse_scratch = _force_rmse(tuned, test), _force_rmse(scratch, test)
    print(f"held-out Cu-Ag force RMSE: fine-tuned {rmse_tuned:.4f}, scratch {rmse_scratch:.4f} eV/Å")
    assert rmse_tuned < 0.9 * rmse_scratch


def test_transfer_keeps_the_source_on_old_elements(pretrained, emt):
    """With a new element and no refit, Cu-only structures get exactly the source's energies and forces."""
    from potential import ModelConfig, Potential

    source = load_model(pretrained / "pre" / "model.pt")
    config = source.config.to_dict()
    config.update(elements=[29, 47], atomic_energies=source.config.atomic_energies + [0.3])
    torch.manual_seed(0)
    model = Potential(ModelConfig.from_dict(config))
    transfer(model, source, [], refit=False, log=lambda msg: None)
    cu = emt(3, seed=9)
    for a, b in zip(evaluate(cu, model, stress=True), evaluate(cu, source, stress=True)):
        assert a["energy"] == pytest.approx(b["energy"], rel=1e-13)
        assert np.allclose(a["forces"], b["forces"], rtol=0, atol=1e-12)


def test_freeze_holds_old_rows_and_trains_new_ones(pretrained, tmp_path):
    from potential.training.config import parse_config

    cfg = parse_config(_raw(pretrained / "cuag.h5", tmp_path / "frozen", 1,
                            model={"init_from": str(pretrained / "pre" / "model.pt")},
                            training={"freeze": ["embedding", "interactions"], "ema_decay": None}))
    trainer = Trainer(cfg)
    start = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    cu, ag = 0, 1  # species rows (elements sorted: Cu 29, Ag 47)
    assert torch.equal(after["embedding.weight"][cu], start["embedding.weight"][cu])  # held
    assert not torch.equal(after["embedding.weight"][ag], start["embedding.weight"][ag])  # new element trains
    radial = [k for k in after if k.startswith("interactions.")]
    assert radial and all(torch.equal(after[k], start[k]) for k in radial)  # frozen entirely
    assert torch.equal(after["products.0.weights"][cu], start["products.0.weights"][cu])
    readouts = [k for k in after if k.startswith("readouts.")]
    assert any(not torch.equal(after[k], start[k]) for k in readouts)  # not frozen: trained


def test_finetune_config_errors(cu_h5, make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"training.freeze: \['embedding'\] .* needs model.init_from"):
        make_config(cu_h5, training={"freeze": ["embedding"]})
    with pytest.raises(ConfigError, match=r"training.freeze\[0\]: expected one of embedding\|interactions"):
        make_config(cu_h5, model={"init_from": "x.pt"}, training={"freeze": ["radial"]})
    with pytest.raises(ConfigError, match=r"model.init_from: file not found: '.*missing.pt'"):
        Trainer(make_config(cu_h5, model={"init_from": str(tmp_path / "missing.pt")}))
    with pytest.raises(ConfigError, match="training.committee: expected an integer >= 2"):
        make_config(cu_h5, training={"committee": 1})
