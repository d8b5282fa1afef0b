"""How many PGD steps does OA-TD3's inner minimisation need? (issue 5, the update-cost target)

For trained OA-TD3 agents (run directories of ``scripts/action_robustness_results.py``), collect
states by running the agent with exploration noise, then solve the OA target's inner problem

    min_{|delta|_inf <= eps} min_i Q_oa,i'(s, clip(pi'(s) + delta))

with ``robustrl.algos.td3.worst_delta`` (OA-TD3's own PGD: random start, signed steps of
2.5 eps / K, best iterate, clean action included) for several step counts K. The reference
minimum per state is the lowest value found by any run, including 8 restarts of 100 steps. For
each K it reports, over states, seeds and 3 random starts:

- ``found``: the fraction of the achievable decrease found, mean of
  ``(Q_clean - Q_K) / (Q_clean - Q_ref)`` over states where the decrease is not negligible;
- ``shortfall``: the mean of ``Q_K - Q_ref``, in the critic's units and relative to the mean
  decrease ``Q_clean - Q_ref`` (how far K steps leave the OA target above the reference).

Writes ``docs/results/action_robustness/pgd_steps_<env>.md``. Pendulum's 1-D action makes the
problem trivial (one signed step reaches the best end of the interval), so the agents studied are
a HalfCheetah-v5 OA-TD3 (6-D action, 2x256 critics; trained here in ~6 min) and the Reacher-v5
agents of the action-robustness results (2-D action, 2x64):

    robustrl train --algo oa-td3 --env HalfCheetah-v5 --steps 30000 --set learning_starts=5000 \
        --set oa.pgd_steps=2 --set eval_every=0 --name hc_oa_quality_s0
    python scripts/oa_pgd_steps.py --runs runs --method hc_oa_quality --seeds 1
    python scripts/oa_pgd_steps.py --runs runs/action_results_reacher --method oa-td3 --seeds 3
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np
import torch

from robustrl.algos.td3 import worst_delta
from robustrl.envs import make_env
from robustrl.policy import load
from robustrl.threat import ActionBall

ROOT = Path(__file__).resolve().parents[1]
STEP_COUNTS = [1, 2, 3, 5, 10, 20]
# "twin": PGD on min_i Q_oa,i' (OA-TD3's target until this study); "q1": PGD on Q_oa,1' alone,
# then min_i Q_oa,i' at the better of the clean action and the point found (half the work)
VARIANTS = ["twin", "q1"]


def collect_states(policy, n: int, seed: int) -> torch.Tensor:
    """Normalised observations visited by the agent with its exploration noise, (n, obs_dim)."""
    env = make_env(policy.config.env)
    obs, _ = env.reset(seed=seed)
    states = []
    while len(states) < n:
        norm = torch.as_tensor(policy.normalizer.normalize(obs[None]), dtype=torch.float32)
        states.append(norm[0])
        action = policy.agent.act(norm, deterministic=False)[0].numpy()
        low, high = env.action_space.low, env.action_space.high
        obs, _, terminated, truncated, _ = env.step(low + (action + 1.0) * 0.5 * (high - low))
        if terminated or truncated:
            obs, _ = env.reset()
    return torch.stack(states)


def twin_min(agent, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """The OA target's clipped double-Q ``min_i Q_oa,i'(obs, action)``, (B,)."""
    return agent.oa_critic_target(obs, action).min(0).values


def solve(agent, obs: torch.Tensor, action: torch.Tensor, eps: float, k: int, variant: str):
    """The inner minimum found by K PGD steps, (B,). ``twin``: PGD on the clipped double-Q (what
    OA-TD3 does); ``q1``: PGD on ``Q_oa,1'`` alone, then the clipped double-Q at the better of the
    clean action and the point found."""
    if variant == "twin":
        return worst_delta(partial(twin_min, agent, obs), action, eps, k, 2.5 * eps / k)[1]
    q1 = partial(agent.oa_critic_target.member, 0, obs)
    delta, _ = worst_delta(q1, action, eps, k, 2.5 * eps / k)
    executed = ActionBall(eps).apply(action, delta)
    return torch.minimum(twin_min(agent, obs, action), twin_min(agent, obs, executed))


def shown(path: str) -> str:
    """``path`` relative to the repository when it is inside it (for the written command)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument(
        "--method", default="hc_oa_quality", help="run name prefix (METHOD_s<seed>)"
    )
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--states", type=int, default=2000)
    parser.add_argument("--eps", default="0.1,0.3")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "action_robustness"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    eps_list = [float(e) for e in args.eps.split(",")]
    # per eps and K: lists of per-state values pooled over seeds and starts
    keys = [(variant, k) for variant in VARIANTS for k in STEP_COUNTS]
    found = {e: {key: [] for key in keys} for e in eps_list}
    shortfall = {e: {key: [] for key in keys} for e in eps_list}
    decrease = {e: [] for e in eps_list}
    cleans = []
    for seed in range(args.seeds):
        run_dir = Path(args.runs) / f"{args.method}_s{seed}"
        policy = load(run_dir)
        cfg = policy.config
        env = cfg.env
        trained = (
            f"{cfg.env}, {cfg.steps} steps, {'x'.join(map(str, cfg.td3.hidden_sizes))} networks, "
            f"trained with {cfg.oa.pgd_steps} PGD steps at action_eps {cfg.oa.action_eps}"
        )
        agent = policy.agent
        agent.requires_grad_(False)
        torch.manual_seed(1000 + seed)  # the exploration noise of the visited states
        obs = collect_states(policy, args.states, seed=1000 + seed)
        with torch.no_grad():
            action = agent.actor_target(obs)
        clean = twin_min(agent, obs, action)
        cleans.append(clean)
        for eps in eps_list:
            torch.manual_seed(seed)
            runs = {
                (variant, k): [solve(agent, obs, action, eps, k, variant) for _ in range(3)]
                for variant in VARIANTS
                for k in STEP_COUNTS
            }
            restarts = [solve(agent, obs, action, eps, 100, "twin") for _ in range(8)]
            everything = restarts + [v for values in runs.values() for v in values]
            reference = torch.stack(everything).min(0).values
            gap = clean - reference
            decrease[eps].append(gap)
            # states where the worst perturbation changes the value at all
            moved = gap > 1e-3 * clean.abs().mean()
            for key, values in runs.items():
                for v in values:
                    found[eps][key].append((clean - v)[moved] / gap[moved])
                    shortfall[eps][key].append(v - reference)
        print(f"seed {seed}: {run_dir} done", flush=True)

    lines = [
        "# OA-TD3: PGD steps in the OA target's inner minimisation",
        "",
        f"`python scripts/oa_pgd_steps.py --runs {shown(args.runs)} --method {args.method} "
        f"--seeds {args.seeds} --states {args.states} --eps {args.eps}`: OA-TD3 agents "
        f"{args.method}_s0..s{args.seeds - 1} ({trained}), "
        f"{args.states} states per seed visited by the agent with its "
        "exploration noise, 3 random starts per K. Inner problem: "
        "`min_delta min_i Q_oa,i'(s, clip(pi'(s) + delta))`, OA-TD3's PGD with step 2.5 eps / K. "
        "Reference: the lowest value any run found per state (8 extra restarts of 100 steps).",
        "",
    ]
    for eps in eps_list:
        gap = torch.cat(decrease[eps])
        lines += [
            f"**eps {eps}**: the reference lies {gap.mean():.3f} below the clean action's value on "
            f"average (mean |Q| at the clean action: {torch.cat(cleans).abs().mean():.1f}).",
            "",
            "| search | K | found (mean) | found (10th percentile) | shortfall (mean) "
            "| shortfall / mean decrease |",
            "|---|---|---|---|---|---|",
        ]
        for variant, k in keys:
            f = torch.cat(found[eps][variant, k]).numpy()
            s = torch.cat(shortfall[eps][variant, k]).numpy()
            lines.append(
                f"| {variant} | {k} | {f.mean():.3f} | {np.percentile(f, 10):.3f} | "
                f"{s.mean():.4f} | {s.mean() / gap.mean():.3f} |"
            )
        lines.append("")
    text = "\n".join(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pgd_steps_{env.split('-')[0].lower()}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
