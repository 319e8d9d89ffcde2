"""ModelConfig validation, unknown elements, model files (round trip and bad files)."""

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms

import potential
from potential import ModelConfig, load_model, read_model_file, save_model

ELEMENTS = [1, 6, 8]


def test_config_round_trip_and_sorting():
    cfg = ModelConfig.from_dict(dict(elements=[8, 1], atomic_energies=[-2.0, -1.0], radial_hidden=[4, 4]))
    assert cfg.elements == [1, 8] and cfg.atomic_energies == [-1.0, -2.0]  # energies follow their element
    assert cfg.radial_hidden == (4, 4)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert ModelConfig(elements=[29]).atomic_energies == [0.0]


@pytest.mark.parametrize("key, value, words", [
    ("channels", 0, "channels=0"),
    ("lmax", -1, "lmax=-1"),
    ("r_max", "5", "r_max='5'"),
    ("dtype", "float16", "dtype='float16'"),
    ("backend", "cuda", "backend='cuda'"),
    ("elements", [1, 1], "duplicates"),
    ("elements", [0], "atomic number"),
    ("atomic_energies", [1.0], "one value per element"),
    ("radial_hidden", [8, 0], "radial_hidden"),
    ("shift", float("nan"), "shift=nan"),
])
def test_config_rejects_bad_values(key, value, words):
    d = dict(elements=[1, 8], **{key: value}) if key != "elements" else dict(elements=value)
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(")):
        ModelConfig.from_dict(d)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown key.*'hidden_irreps'"):
        ModelConfig.from_dict(dict(elements=[1], hidden_irreps="32x0e"))
    with pytest.raises(ValueError, match="missing required key 'elements'"):
        ModelConfig.from_dict(dict(channels=8))


def test_unknown_element_error(model, props):
    batch = props.to_batch(model, [Atoms("H2O", positions=np.eye(3)), Atoms("CuH", positions=np.eye(3)[:2])])
    with pytest.raises(ValueError, match=r"Cu \(Z=29\) in structure\(s\) \[1\].*H \(Z=1\), C \(Z=6\), O \(Z=8\)"):
        model(batch)


def test_save_load_round_trip(make_model, props, rng, tmp_path):
    model = make_model(seed=7, dtype="float32")
    path = tmp_path / "sub" / "model.pt"
    save_model(model, path, extra={"note": "test", "epoch": 3})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    loaded = load_model(path)
    assert not loaded.training and loaded.config == model.config and loaded.dtype == torch.float32
    structures = [props.random_crystal(rng, 3, ELEMENTS), props.random_cluster(rng, 4, ELEMENTS)]
    a, b = props.evaluate(model, structures), props.evaluate(loaded, structures)
    assert np.array_equal(a["energy"], b["energy"]) and np.array_equal(a["forces"], b["forces"])
    payload = read_model_file(path)
    assert payload["format"] == potential.FORMAT and payload["extra"] == {"note": "test", "epoch": 3}
    assert payload["units"]["energy"] == "eV"
    assert load_model(path, backend="auto").backend == "auto"


def test_bad_model_files(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    with pytest.raises(ValueError, match="is not a tumbler model file"):
        load_model(text)
    raw = tmp_path / "state.pt"
    torch.save(model.state_dict(), raw)
    with pytest.raises(ValueError, match="is not a tumbler model file.*raw state_dict"):
        load_model(raw)
    good = tmp_path / "good.pt"
    save_model(model, good)
    payload = torch.load(good, weights_only=True)
    newer = tmp_path / "newer.pt"
    torch.save({**payload, "format_version": potential.FORMAT_VERSION + 1}, newer)
    with pytest.raises(ValueError, match="newer tumbler"):
        load_model(newer)
    broken = tmp_path / "broken.pt"
    torch.save({**payload, "config": {**payload["config"], "channels": 16}}, broken)
    with pytest.raises(ValueError, match="weights do not match"):
        load_model(broken)
    unknown = tmp_path / "unknown.pt"
    torch.save({**payload, "config": {**payload["config"], "spin": 1}}, unknown)
    with pytest.raises(ValueError, match="bad model config.*spin"):
        load_model(unknown)


def test_set_energy_reference(make_model, props):
    model = make_model(seed=1)
    model.set_energy_reference(atomic_energies=[-1.0, -2.0, -3.0], shift=0.5)
    assert model.config.atomic_energies == [-1.0, -2.0, -3.0] and model.config.shift == 0.5
    out = props.evaluate(model, [Atoms("O", positions=[[0, 0, 0]])])
    assert out["energy"][0] == -3.0
    assert dataclasses.replace(model.config).scale == 0.7


def test_extra_is_stored_as_plain_data(model, tmp_path):
    path = tmp_path / "model.pt"
    save_model(model, path, extra={"rmse": np.float32(0.5), "curve": np.arange(3), "pair": (1, "a")})
    assert read_model_file(path)["extra"] == {"rmse": 0.5, "curve": [0, 1, 2], "pair": [1, "a"]}
    with pytest.raises(TypeError, match=r"extra\['bad'\] is a object"):
        save_model(model, path, extra={"bad": object()})
    assert read_model_file(path)["extra"]["rmse"] == 0.5  # the failed save left the old file intact


def test_zero_readouts_gives_reference_energies_and_still_trains(make_model):
    """After zero_readouts, E = sum E0 + shift * sum tanh(n_i) exactly, and the readouts get gradients."""
    from ase.build import molecule

    from data import Batch

    model = make_model(seed=3)
    atoms = molecule("CH3OH")
    batch = Batch.from_atoms([atoms], cutoff=model.r_max, dtype=torch.float64)
    before = model(batch)["energy"].item()
    model.zero_readouts()
    out = model(batch, training=True)
    e0 = dict(zip(model.config.elements, model.config.atomic_energies))
    shift = model.config.shift
    reference = sum(e0[z] for z in atoms.numbers)
    # every atom of methanol has neighbours within 3 Å: tanh(n_i) lies in (0, 1]
    offset = out["energy"].item() - reference
    assert offset != pytest.approx(before - reference)
    assert shift * len(atoms) <= offset < 0.0
    out["energy"].sum().backward()
    assert model.readouts[-1].w2.grad.abs().sum() > 0
    with torch.no_grad():  # the energy no longer depends on the message-passing weights
        for p in model.interactions.parameters():
            p.add_(torch.randn_like(p))
    assert model(batch)["energy"].item() == out["energy"].item()


def test_species_shift_is_gated_like_shift(make_model):
    """The trainable per-element shift moves bulk/molecular atoms and leaves an isolated atom at exactly E0."""
    from ase.build import molecule

    from data import Batch

    model = make_model(seed=4)
    lone = Atoms("O", positions=[[0.0, 0.0, 0.0]])
    methanol = molecule("CH3OH")
    batch = Batch.from_atoms([lone, methanol], cutoff=model.r_max, dtype=torch.float64)
    before = model(batch)["energy"]
    with torch.no_grad():
        model.species_shift.copy_(torch.tensor([0.3, -0.2, 0.5], dtype=model.species_shift.dtype))
    after = model(batch)["energy"]
    e0 = dict(zip(model.config.elements, model.config.atomic_energies))
    assert after[0].item() == e0[8] == before[0].item()
    assert 0.0 < (after[1] - before[1]).item() < 0.3 * 4 - 0.2 * 1 + 0.5 * 1 + 1e-9  # 4 H, 1 C, 1 O; tanh <= 1
