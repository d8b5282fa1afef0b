"""A small grid world shipped with the package (like the paper's sequential grid-world example).

Default layout (5 x 5, row 0 at the top), ``S`` start, ``G`` goal (+1 on entering), ``L`` lava
(-1 on entering), ``#`` wall; goal and lava are absorbing with reward 0 afterwards::

    . . . . .
    . . # . .
    . . # . .
    . . . . .
    S L L L G

Five actions: up, right, down, left, stay. With probability ``1 - slip`` the chosen action
happens; with probability ``slip`` one of the four moves is taken uniformly at random (moves into
a wall or off the grid leave the agent in place). The short route runs along the lava; the safe
one goes round over the top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustrl.errors import ConfigError
from robustrl.theory.mdp import TabularMDP

DEFAULT_LAYOUT = (
    ".....",
    "..#..",
    "..#..",
    ".....",
    "SLLLG",
)
ACTIONS = ("up", "right", "down", "left", "stay")
MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1), (0, 0)])  # (d_row, d_col) per action
REWARDS = {"G": 1.0, "L": -1.0}


@dataclass(frozen=True)
class GridWorld:
    """The MDP plus what plotting needs: ``cells[s] = (row, col)`` of state ``s`` (walls are not states)."""

    mdp: TabularMDP
    layout: tuple[str, ...]
    cells: np.ndarray  # (S, 2)
    terminal: np.ndarray  # (S,) bool: goal or lava
    start: int
    slip: float

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.layout), len(self.layout[0])

    def state(self, row: int, col: int) -> int:
        """The state index of a free cell."""
        hits = np.flatnonzero((self.cells[:, 0] == row) & (self.cells[:, 1] == col))
        if hits.size == 0:
            raise ConfigError(f"cell ({row}, {col}) is a wall or off the grid")
        return int(hits[0])


def make_gridworld(
    slip: float = 0.1, gamma: float = 0.95, layout: tuple[str, ...] | list[str] = DEFAULT_LAYOUT
) -> GridWorld:
    """Build the grid world MDP: S free cells, 5 actions, expected rewards r(s, a) of shape (S, A)."""
    if not 0.0 <= float(slip) <= 1.0:
        raise ConfigError(f"slip must be in [0, 1], got {slip}")
    layout = tuple(layout)
    if not layout or len({len(row) for row in layout}) != 1:
        raise ConfigError("layout must be a non-empty list of equally long strings")
    if bad := set("".join(layout)) - set(".#SGL"):
        raise ConfigError(f"layout may only contain . # S G L, found {sorted(bad)[0]!r}")
    if "".join(layout).count("S") != 1:
        raise ConfigError("layout must contain exactly one start cell S")
    rows, cols = len(layout), len(layout[0])
    cells = [(i, j) for i in range(rows) for j in range(cols) if layout[i][j] != "#"]
    index = {cell: s for s, cell in enumerate(cells)}
    n_states, n_actions = len(cells), len(ACTIONS)

    def target(cell: tuple[int, int], move: np.ndarray) -> int:
        i, j = cell[0] + move[0], cell[1] + move[1]
        return index.get((int(i), int(j)), index[cell])  # walls and borders: stay

    transitions = np.zeros((n_states, n_actions, n_states))
    rewards = np.zeros((n_states, n_actions))
    terminal = np.array([layout[i][j] in REWARDS for i, j in cells])
    for s, cell in enumerate(cells):
        if terminal[s]:
            transitions[s, :, s] = 1.0  # absorbing, reward 0
            continue
        for a in range(n_actions):
            transitions[s, a, target(cell, MOVES[a])] += 1.0 - slip
            for move in MOVES[:4]:
                transitions[s, a, target(cell, move)] += slip / 4.0
            for s_next in np.flatnonzero(transitions[s, a]):
                i, j = cells[s_next]
                rewards[s, a] += transitions[s, a, s_next] * REWARDS.get(layout[i][j], 0.0)
    start = next(index[c] for c in cells if layout[c[0]][c[1]] == "S")
    initial = np.zeros(n_states)
    initial[start] = 1.0
    mdp = TabularMDP(
        transitions,
        rewards,
        gamma,
        initial,
        state_names=[f"({i},{j})" for i, j in cells],
        action_names=list(ACTIONS),
    )
    return GridWorld(mdp, layout, np.array(cells), terminal, start, float(slip))
