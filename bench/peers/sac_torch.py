#!/usr/bin/python3
"""sac_torch.py - the PyTorch peer of bench/learner: the same SAC update (twin
critics with a minimum target, squashed-Gaussian actor, automatic temperature,
Polyak targets, Adam) on the same problem sizes, timed the same way. Prints one
JSON object: {"updates_per_s": .., "forward_us": .., "threads": .., "torch": ..}.

usage: sac_torch.py [--threads N] [--seconds S] [--batch B] [--hidden H]
                    [--obs O] [--act A]
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


class Actor(nn.Module):
    def __init__(self, obs, act, hidden):
        super().__init__()
        self.net = mlp(obs, hidden, 2 * act)
        self.act = act

    def forward(self, x, deterministic=False):
        mu, raw = self.net(x).split(self.act, dim=-1)
        log_std = -5.0 + 3.5 * (torch.tanh(raw) + 1.0)
        std = log_std.exp()
        eps = torch.zeros_like(mu) if deterministic else torch.randn_like(mu)
        u = mu + std * eps
        a = torch.tanh(u)
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
                - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return a, logp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--obs", type=int, default=17)
    ap.add_argument("--act", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    O, A, H, B = args.obs, args.act, args.hidden, args.batch

    actor = Actor(O, A, H)
    q1, q2 = mlp(O + A, H, 1), mlp(O + A, H, 1)
    t1, t2 = mlp(O + A, H, 1), mlp(O + A, H, 1)
    t1.load_state_dict(q1.state_dict())
    t2.load_state_dict(q2.state_dict())
    log_alpha = torch.zeros(1, requires_grad=True)
    a_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    q_opt = torch.optim.Adam(list(q1.parameters()) + list(q2.parameters()), lr=3e-4)
    al_opt = torch.optim.Adam([log_alpha], lr=3e-4)
    gamma, tau, target_entropy = 0.99, 0.005, -float(A)

    obs, nxt = torch.randn(B, O), torch.randn(B, O)
    act = torch.rand(B, A) * 2 - 1
    rew, done = torch.randn(B), torch.zeros(B)

    def update():
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            na, nlogp = actor(nxt)
            x = torch.cat([nxt, na], -1)
            qt = torch.min(t1(x), t2(x)).squeeze(-1)
            y = rew + gamma * (1 - done) * (qt - alpha * nlogp)
        x = torch.cat([obs, act], -1)
        qloss = F.mse_loss(q1(x).squeeze(-1), y) + F.mse_loss(q2(x).squeeze(-1), y)
        q_opt.zero_grad()
        qloss.backward()
        q_opt.step()
        pa, logp = actor(obs)
        x = torch.cat([obs, pa], -1)
        q = torch.min(q1(x), q2(x)).squeeze(-1)
        aloss = (alpha * logp - q).mean()
        a_opt.zero_grad()
        aloss.backward()
        a_opt.step()
        alloss = -(log_alpha * (logp.detach() + target_entropy)).mean()
        al_opt.zero_grad()
        alloss.backward()
        al_opt.step()
        with torch.no_grad():
            for t, s in ((t1, q1), (t2, q2)):
                for pt, ps in zip(t.parameters(), s.parameters()):
                    pt.mul_(1 - tau).add_(ps, alpha=tau)

    for _ in range(10):
        update()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        update()
        n += 1
    ups = n / (time.perf_counter() - t0)

    one = torch.randn(1, O)
    lat = []
    with torch.no_grad():
        for _ in range(200):
            actor(one, deterministic=True)
        for _ in range(3000):
            s = time.perf_counter()
            actor(one, deterministic=True)
            lat.append(time.perf_counter() - s)
    lat.sort()
    print(json.dumps({"updates_per_s": ups, "forward_us": lat[len(lat) // 2] * 1e6,
                      "threads": args.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
