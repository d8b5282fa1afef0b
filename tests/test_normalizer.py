"""The running observation normaliser matches numpy's statistics and clips."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robustrl.envs import RunningNormalizer


@given(
    data=arrays(
        np.float64, st.tuples(st.integers(2, 60), st.integers(1, 5)), elements=st.floats(-1e3, 1e3)
    ),
    cuts=st.lists(st.integers(1, 59), max_size=5),
)
@settings(max_examples=150, deadline=None)
def test_running_statistics_match_numpy(data, cuts):
    norm = RunningNormalizer(data.shape[1])
    for chunk in np.split(data, sorted(c for c in set(cuts) if c < len(data))):
        if len(chunk) == 1:
            norm.update(chunk[0])  # single observations, as in the training loop
        elif len(chunk):
            norm.update(chunk)
    assert norm.count == len(data)
    np.testing.assert_allclose(norm.mean, data.mean(0), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(norm.var, data.var(0), rtol=1e-7, atol=1e-5)


def test_normalize_standardises_and_clips():
    rng = np.random.default_rng(0)
    data = rng.normal(5.0, 3.0, size=(10_000, 3))
    norm = RunningNormalizer(3, clip=2.0)
    for row in data[:200]:
        norm.update(row)
    norm.update(data[200:])
    out = norm.normalize(data)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.max(), 2.0)
    np.testing.assert_allclose(out.min(), -2.0)
    expected = np.clip((data - data.mean(0)) / data.std(0), -2, 2)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_disabled_normaliser_is_identity_and_state_round_trips():
    off = RunningNormalizer(2, enabled=False)
    off.update(np.ones((4, 2)) * 7)
    np.testing.assert_array_equal(off.normalize(np.array([3.0, -4.0])), [3.0, -4.0])
    on = RunningNormalizer(2)
    on.update(np.array([[1.0, 2.0], [3.0, 8.0]]))
    clone = RunningNormalizer(2)
    clone.load_state_dict(on.state_dict())
    assert clone.count == 2
    np.testing.assert_array_equal(
        clone.normalize(np.array([2.0, 2.0])), on.normalize(np.array([2.0, 2.0]))
    )
