"""model.tensor_product: "cg" | "gaunt". A gaunt model is a smaller product basis with the same symmetries;
model files record the choice and a file from before the option loads as cg."""

import numpy as np
import pytest
import torch

from potential import ModelConfig, load_model, read_model_file, save_model

ELEMENTS = [1, 6, 8]
# lmax_sh = 3 so that the product basis (messages l <= 3, correlation 3) has couplings Gaunt drops
GAUNT = dict(lmax=1, lmax_sh=3, correlation=3, channels=4, tensor_product="gaunt")


def test_config_checks_the_product():
    assert ModelConfig(elements=[1]).tensor_product == "cg"
    with pytest.raises(ValueError, match="tensor_product='fourier'"):
        ModelConfig.from_dict(dict(elements=[1], tensor_product="fourier"))


def test_gaunt_model_is_smaller_and_keeps_the_symmetries(make_model, props, rng):
    gaunt, cg = make_model(seed=3, **GAUNT), make_model(seed=3, **{**GAUNT, "tensor_product": "cg"})
    assert all(m.spec.tensor_product == "gaunt" for m in list(gaunt.interactions) + list(gaunt.products))
    n_gaunt = sum(p.weights.numel() for p in gaunt.products)
    n_cg = sum(p.weights.numel() for p in cg.products)
    assert n_gaunt < n_cg
    cluster = props.random_cluster(rng, 5, ELEMENTS)
    props.check_o3_equivariance(gaunt, cluster, rng)
    props.check_finite_difference_forces(gaunt, cluster, rng)


def test_files_record_the_product_and_old_files_load_as_cg(make_model, props, rng, tmp_path):
    gaunt = make_model(seed=4, **GAUNT)
    path = tmp_path / "gaunt.pt"
    save_model(gaunt, path)
    assert read_model_file(path)["config"]["tensor_product"] == "gaunt"
    loaded = load_model(path)
    assert loaded.config.tensor_product == "gaunt"
    structures = [props.random_cluster(rng, 4, ELEMENTS)]
    assert np.array_equal(props.evaluate(gaunt, structures)["energy"], props.evaluate(loaded, structures)["energy"])

    cg = make_model(seed=5, **{**GAUNT, "tensor_product": "cg"})
    save_model(cg, path)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["tensor_product"]  # a file written before the option
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    loaded = load_model(old)
    assert loaded.config.tensor_product == "cg"
    assert np.array_equal(props.evaluate(cg, structures)["energy"], props.evaluate(loaded, structures)["energy"])
