"""Replay buffer and prioritised replay: sum-tree invariants, sampling law, persistence."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from robustrl.replay import PrioritizedReplayBuffer, ReplayBuffer, SumTree

priorities = st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=70)


def check_tree(tree: SumTree) -> None:
    internal = np.arange(1, tree.size)
    np.testing.assert_allclose(
        tree.nodes[internal], tree.nodes[2 * internal] + tree.nodes[2 * internal + 1]
    )
    assert np.all(tree.nodes[tree.size + tree.capacity :] == 0.0)


@given(capacity=st.integers(1, 70), data=st.data())
@settings(max_examples=200, deadline=None)
def test_sum_tree_invariants_after_random_updates(capacity, data):
    tree = SumTree(capacity)
    expected = np.zeros(capacity)
    for _ in range(data.draw(st.integers(1, 5))):
        index = np.array(data.draw(st.lists(st.integers(0, capacity - 1), min_size=1, max_size=10)))
        values = np.array(
            data.draw(st.lists(st.floats(0, 50), min_size=len(index), max_size=len(index)))
        )
        tree.set(index, values)
        for i, v in zip(index, values):  # numpy assignment: the last duplicate wins
            expected[i] = v
        check_tree(tree)
        np.testing.assert_allclose(tree.leaves(), expected)
        np.testing.assert_allclose(tree.total, expected.sum())


@given(values=priorities, data=st.data())
@settings(max_examples=200, deadline=None)
def test_sum_tree_find_returns_the_leaf_holding_the_mass(values, data):
    tree = SumTree(len(values))
    tree.set(np.arange(len(values)), np.array(values))
    if tree.total == 0:
        return
    fractions = np.array(
        data.draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=20))
    )
    leaf = tree.find(fractions * tree.total)
    prefix = np.concatenate([[0.0], np.cumsum(values)])
    for j, m in zip(leaf, fractions * tree.total):
        assert values[j] > 0, "a zero-priority leaf must never be sampled"
        assert prefix[j] - 1e-9 <= m < prefix[j + 1] + 1e-9


def test_prioritized_sampling_follows_priorities():
    buffer = PrioritizedReplayBuffer(8, 1, 1, seed=0, priority_exponent=1.0, priority_eps=0.0)
    for i in range(8):
        buffer.add([i], [0.0], 0.0, [i], 0.0)
    td = np.array([1, 2, 3, 4, 0, 0, 0, 10], float)
    buffer.update_priorities(np.arange(8), td)
    counts = np.zeros(8)
    for _ in range(400):
        _, index = buffer.sample(50)
        np.add.at(counts, index, 1)
    freq = counts / counts.sum()
    np.testing.assert_allclose(freq, td / td.sum(), atol=0.01)


def test_importance_weights_anneal_and_are_normalised():
    buffer = PrioritizedReplayBuffer(16, 2, 1, seed=1)
    for i in range(16):
        buffer.add([i, i], [0.0], 0.0, [i, i], 0.0)
    buffer.update_priorities(np.arange(16), np.linspace(0.1, 5.0, 16))
    assert buffer.importance_exponent(0.0) == 0.4 and buffer.importance_exponent(1.0) == 1.0
    assert buffer.importance_exponent(0.5) == 0.7
    batch, index = buffer.sample(64, progress=1.0)
    assert batch["weight"].max() == 1.0 and batch["weight"].min() > 0
    # with b = 1 the weight is inversely proportional to the priority (p^a)
    p = buffer.tree.leaves()[index]
    np.testing.assert_allclose(batch["weight"], p.min() / p, rtol=1e-5)


def test_new_transitions_get_the_max_priority():
    buffer = PrioritizedReplayBuffer(4, 1, 1, seed=0)
    buffer.add([0], [0], 0, [0], 0)
    buffer.update_priorities(np.array([0]), np.array([9.0]))
    buffer.add([1], [0], 0, [1], 0)
    leaves = buffer.tree.leaves()
    assert leaves[1] == leaves[0] == buffer.max_priority


def test_buffer_wraps_and_round_trips():
    buffer = PrioritizedReplayBuffer(5, 2, 1, seed=0)
    for i in range(7):
        buffer.add([i, -i], [i / 10], float(i), [i + 1, -i - 1], float(i == 6))
    assert len(buffer) == 5 and buffer.pos == 2
    assert buffer.obs[0, 0] == 5 and buffer.obs[1, 0] == 6  # oldest entries overwritten
    buffer.update_priorities(np.array([0, 3]), np.array([2.0, 0.5]))
    clone = PrioritizedReplayBuffer(5, 2, 1, seed=0)
    clone.load_state_dict(buffer.state_dict())
    for name in ("obs", "action", "reward", "next_obs", "terminated"):
        np.testing.assert_array_equal(getattr(clone, name), getattr(buffer, name))
    np.testing.assert_array_equal(clone.tree.nodes, buffer.tree.nodes)
    assert (clone.pos, clone.full, clone.max_priority) == (
        buffer.pos,
        buffer.full,
        buffer.max_priority,
    )


def test_uniform_buffer_samples_only_filled_rows():
    buffer = ReplayBuffer(100, 1, 1, seed=0)
    for i in range(10):
        buffer.add([i], [0], 0, [i], 0)
    batch, index = buffer.sample(256)
    assert index.max() < 10 and np.all(batch["weight"] == 1.0)
