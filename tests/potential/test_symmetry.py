"""O(3) equivariance, permutation and translation invariance, swept over model shapes (conftest.CONFIGS).

Float64, relative error < 1e-10. Clusters (no cell) and 3D-periodic sheared cells (stress included).
"""

ELEMENTS = [1, 6, 8]


def test_o3_equivariance_cluster(config_model, props, rng):
    props.check_o3_equivariance(config_model, props.random_cluster(rng, 6, ELEMENTS), rng)


def test_o3_equivariance_crystal(config_model, props, rng):
    props.check_o3_equivariance(config_model, props.random_crystal(rng, 3, ELEMENTS), rng)


def test_permutation_invariance(model, props, rng):
    props.check_permutation(model, props.random_cluster(rng, 6, ELEMENTS), rng)
    props.check_permutation(model, props.random_crystal(rng, 4, ELEMENTS), rng)


def test_translation_invariance(model, props, rng):
    props.check_translation(model, props.random_cluster(rng, 5, ELEMENTS), rng)
    props.check_translation(model, props.random_crystal(rng, 3, ELEMENTS), rng)
