import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from targets.membership import membership_matrix, split_pool_test


@settings(max_examples=40, deadline=None)
@given(n_models=st.integers(2, 33), n_points=st.integers(1, 300), seed=st.integers(0, 2**40))
def test_every_point_is_in_for_half_the_models(n_models, n_points, seed):
    keep = membership_matrix(n_models, n_points, seed)
    assert keep.shape == (n_models, n_points) and keep.dtype == bool
    per_point = keep.sum(axis=0)
    assert per_point.min() >= n_models // 2 and per_point.max() <= (n_models + 1) // 2


def test_each_model_trains_on_about_half_the_pool():
    keep = membership_matrix(16, 2000, seed=3)
    per_model = keep.sum(axis=1)
    # binomial(2000, 1/2) has sd ~22; 5 sd is a generous bound
    assert np.all(np.abs(per_model - 1000) < 112)


def test_membership_is_seeded():
    a, b, c = membership_matrix(8, 100, 1), membership_matrix(8, 100, 1), membership_matrix(8, 100, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_split_is_a_stratified_partition():
    y = np.array([0] * 80 + [1] * 20)
    pool, test = split_pool_test(y, 0.25, seed=5, stratify=True)
    assert len(test) == 25 and len(np.intersect1d(pool, test)) == 0
    assert np.array_equal(np.sort(np.r_[pool, test]), np.arange(100))
    assert y[test].sum() == 5
    assert np.array_equal(split_pool_test(y, 0.25, seed=5, stratify=True)[0], pool)
