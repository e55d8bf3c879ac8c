"""Distillation: DCD (DUO Sec. 4.3 / Alg. 1) and SDTT (MDLM), one round per training job."""

import math

import pytest
import torch
from conftest import perturb
import torch.nn as nn

from conftest import make_module
from dlm.algos import load_module
from dlm.algos.dcd import shared_noise_argmax, shifted_times
from dlm.algos.mdlm import NEG_INF
from dlm.algos.sdtt import teacher_steps




# --- the shared-noise trajectory ---------------------------------------------------------------------

def test_shared_noise_tokens_flip_at_most_once_and_only_to_the_clean_token():
    K, B, L = 50, 4, 64
    x = torch.randint(0, K, (B, L), generator=torch.Generator().manual_seed(1))
    gammas = torch.linspace(-1.0, -4.0, 301)  # t decreasing: the signal grows
    z = torch.stack(shared_noise_argmax(x, [torch.full((B,), float(g)) for g in gammas], K,
                                        torch.Generator().manual_seed(2)))  # (G, B, L)
    flips = (z[1:] != z[:-1]).sum(0)  # (B, L)
    assert flips.max() <= 1
    assert (flips == 1).any() and (z[0] != x).any()  # the grid does cross flips
    flipped = flips == 1
    assert torch.equal(z[-1][flipped], x[flipped])  # a flip always lands on the clean token
    assert torch.equal(z[-1][~flipped], z[0][~flipped])  # ...and nothing else ever changes


def test_shared_noise_marginal_is_the_uniform_state_process():
    from dlm.diffusion.integral import transformation

    K, n, gamma = 50, 20000, -2.5
    x = torch.randint(0, K, (1, n), generator=torch.Generator().manual_seed(3))
    z_t, z_s = shared_noise_argmax(x, [torch.tensor([gamma]), torch.tensor([gamma - 0.5])], K,
                                   torch.Generator().manual_seed(4))
    for z, g in ((z_t, gamma), (z_s, gamma - 0.5)):
        alpha = float(transformation(g, K)[0])
        p = alpha + (1 - alpha) / K  # P(z = x) under Cat(alpha x + (1 - alpha)/K)
        assert abs((z == x).float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert ((z_t == x) <= (z_s == x)).all()  # coupled: clean at t implies clean at s < t


# --- rounds and times ----------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["dcd", "sdtt"])
def test_dt_doubles_with_the_round(algo):
    dts = [make_module(algo, T=512, round=n, transform="poly9").dt if algo == "dcd"
           else make_module(algo, T=512, round=n).dt for n in range(5)]
    assert dts == [1 / 512, 2 / 512, 4 / 512, 8 / 512, 16 / 512]
    with pytest.raises(ValueError, match="must be < 1"):
        make_module(algo, T=4, round=2)
    t, s = shifted_times(torch.tensor([1e-3, 0.5, 0.999, 1.0]), 0.25)
    assert torch.allclose(t - s, torch.full((4,), 0.25)) and (t <= 1).all() and (s >= 1e-3 - 1e-6).all()


# --- the DCD loss --------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss_type", ["kl-bwd", "kl-fwd"])
def test_dcd_loss_is_zero_at_the_same_point_and_positive_otherwise(loss_type):
    m = perturb(make_module("dcd", vocab_size=32, T=8, round=1, transform="poly9", loss_type=loss_type))
    m.reset_teacher()  # teacher == student
    x = torch.randint(2, 32, (4, 16), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.2, 0.4, 0.6, 0.9])
    same = m.distill_token_loss(x, t, t, torch.Generator().manual_seed(5))  # dt = 0: z_s = z_t, sigma_s = sigma_t
    assert same.abs().max().item() < 1e-5
    diff = m.distill_token_loss(x, t, t - 0.15, torch.Generator().manual_seed(5))
    assert (diff >= -1e-6).all() and diff.mean() > 1e-3
    total, n = m.loss({"input_ids": x, "attention_mask": torch.ones_like(x)}, 0, torch.Generator().manual_seed(6))
    assert n == x.numel() and total > 0
    total.backward()  # gradients reach the student only
    assert all(p.grad is None for p in m.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())


def test_dcd_alpha_is_the_nearest_cache_point_as_the_april_2026_fix(tmp_path):
    """s-sahoo/duo 4925052 (April 2026): Distillation.nll reads alpha_t and alpha_s with
    `_gamma_to_alphat_integral`, the cache's value (K I - 1)/(K - 1) at the NEAREST grid point. A cache with
    points 0.1 apart in gamma: t = 0.3466... gives gamma = -4 + 3 t = -2.96, whose nearest point is -3.0 (not
    -2.9, and not the linear interpolation)."""
    import numpy as np

    from dlm.diffusion.integral import compute_cache, save_cache

    cache = compute_cache(32, -5.0, -1.0, 41)
    save_cache(tmp_path / "c.npz", cache)
    m = make_module("dcd", vocab_size=32, T=8, integral_path=str(tmp_path / "c.npz"))
    g = cache["gamma"]
    i3, i29 = int(np.argmin(np.abs(g + 3.0))), int(np.argmin(np.abs(g + 2.9)))
    t = torch.tensor([(4.0 - 2.96) / 3.0], dtype=torch.float64)
    got = float(m.discrete_alpha(t))
    assert got == pytest.approx(float(cache["alpha"][i3]), rel=1e-12)
    linear = 0.6 * cache["alpha"][i3] + 0.4 * cache["alpha"][i29]
    assert abs(got - linear) > 1e-6 and abs(got - cache["alpha"][i29]) > 1e-6


@pytest.mark.parametrize("algo", ["dcd", "sdtt"])
def test_teacher_is_a_frozen_copy_outside_the_state_dict_reset_per_round(algo):
    kw = {"transform": "poly9"} if algo == "dcd" else {}
    m = make_module(algo, T=8, **kw)
    with pytest.raises(RuntimeError, match="no teacher"):
        m.teacher
    n_params = len(list(m.parameters()))
    perturb(m, seed=1)
    m.reset_teacher()  # start of a round
    assert len(list(m.parameters())) == n_params and not any("teacher" in k for k in m.state_dict())
    assert not m.teacher.training and not any(p.requires_grad for p in m.teacher.parameters())
    snapshot = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    assert all(torch.equal(v, m.backbone.state_dict()[k]) for k, v in snapshot.items())
    perturb(m, seed=2)  # the student trains: the teacher must not move
    assert all(torch.equal(v, m.teacher.state_dict()[k]) for k, v in snapshot.items())
    m.reset_teacher()  # next round: teacher := current student
    assert all(torch.equal(v, m.backbone.state_dict()[k]) for k, v in m.teacher.state_dict().items())


# --- SDTT targets on a hand-checkable teacher ------------------------------------------------------------

K_TOY, MASK = 12, 1  # conftest's special ids: bos/eos 0, mask 1


def toy_token(i, n_masked):
    """The toy teacher's (certain) prediction at position i when its row has n_masked masks."""
    return 2 + (i + n_masked) % (K_TOY - 2)


class ToyTeacher(nn.Module):
    """Logits 0 at toy_token(position, masks in the row), -1e4 elsewhere: x_theta is one-hot."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z, sigma):
        B, L = z.shape
        n = (z == MASK).sum(-1, keepdim=True)  # (B, 1)
        tok = 2 + (torch.arange(L)[None, :] + n) % (K_TOY - 2)  # (B, L)
        return torch.full((B, L, K_TOY), -1e4).scatter(-1, tok[..., None], 0.0)


def test_sdtt_targets_on_a_deterministic_toy_teacher():
    m = make_module("sdtt", vocab_size=K_TOY, block_length=16, T=8)
    m.reset_teacher(ToyTeacher())
    B, L = 6, 16
    z = torch.full((B, L), MASK)
    z[:, :3] = 5  # three clean input positions: kept, never a target
    for t_val, s_val in ((1.0, 0.0), (0.5, 0.4)):
        t, s = torch.full((B,), t_val), torch.full((B,), s_val)
        steps = teacher_steps(t, t_val - s_val, "paper")  # t -> (t + s) / 2 -> s
        target, z_out, step = m.teacher_targets(z, steps, torch.Generator().manual_seed(7))
        assert torch.equal(z_out[:, :3], z[:, :3]) and (step[:, :3] == -1).all()
        n0 = (z == MASK).sum(-1)  # masks seen by the teacher's first call
        n1 = (torch.where(step == 0, 0, z) == MASK).sum(-1)  # ...and by its second call
        for b in range(B):
            for i in range(3, L):
                k = int(step[b, i])
                seen = int(n0[b]) if k == 0 else int(n1[b])  # unmasked at step 0: its prediction; else the last
                expect = toy_token(i, seen)
                assert int(target[b, i].argmax()) == expect and target[b, i, expect] > -1e-3
                assert int(z_out[b, i]) == (expect if k >= 0 else MASK)
        assert target[..., MASK].max() <= NEG_INF / 2  # SUBS: never [MASK]
        if s_val == 0.0:  # the last step reaches alpha = 1: everything is revealed
            assert (step[:, 3:] >= 0).all() and (step == 0).any() and (step == 1).any()
        else:  # p(unmask) = 0.1 / 0.5 per step at alpha = 1 - t: most positions stay masked
            assert ((step == -1) & (z_out == MASK)).any()


def test_sdtt_teacher_grid_released_and_paper():
    """Hand-derived teacher times (start, end) for t = 0.5 and student step dt = 0.1 (teacher steps of 0.05).
    released (SDTT's `_teacher_logprobs_on_mask`): tau_i = t w_i + (1 - t)(t - dt), w = (1, 0): 0.5 + 0.5 * 0.4 =
    0.7 and 0.5 * 0.4 = 0.2; paper: 0.5 -> 0.45 -> 0.4. Near t = 0 the released starts are clamped at 1e-5 and the
    ends at 0 (everything revealed): t = 0.05: tau_0 = 0.05 + 0.95 * (-0.05) = 0.0025, tau_1 = -0.0475 -> 1e-5."""
    t = torch.tensor([0.5, 0.05], dtype=torch.float64)
    def flat(steps):
        return [v for a, b in steps for v in (*a.tolist(), *b.tolist())]

    assert flat(teacher_steps(t, 0.1, "released")) == pytest.approx([0.7, 0.0025, 0.65, 0.0, 0.2, 1e-5, 0.15, 0.0])
    assert flat(teacher_steps(t, 0.1, "paper")) == pytest.approx([0.5, 0.05, 0.45, 0.025, 0.45, 0.025, 0.4, 0.0])
    assert make_module("sdtt", T=8).hparams.teacher_grid == "released"  # the released code's grid is the default
    with pytest.raises(ValueError, match="teacher_grid"):
        make_module("sdtt", T=8, teacher_grid="even")


def test_sdtt_loss_only_counts_masked_positions():
    m = perturb(make_module("sdtt", vocab_size=32, T=8, round=2))
    m.reset_teacher()
    x = torch.randint(2, 32, (4, 16), generator=torch.Generator().manual_seed(0))
    kl, masked = m.distill_token_loss(x, torch.full((4,), 0.5), torch.Generator().manual_seed(1))
    assert masked.any() and (~masked).any()
    assert (kl[~masked] == 0).all() and kl[masked].mean() > 1e-4
    total, n = m.loss({"input_ids": x, "attention_mask": torch.ones_like(x)}, 0, torch.Generator().manual_seed(2))
    assert 0 < n <= x.numel() and torch.isfinite(total)


# --- end to end: rounds as training jobs -------------------------------------------------------------------

def run_cfg(algo, steps, **algo_args):
    return {"algo": algo, "model": {"size": "nano", "dropout": 0.0}, "algo_args": algo_args,
            "optim": {"lr": 3e-3, "warmup_steps": 2, "lr_schedule": "constant"},
            "trainer": {"max_steps": steps, "batch_size": 4, "val_every": steps, "val_batches": 1,
                        "ckpt_every": 50, "log_every": 50, "ema": 0.9}}


def test_init_weights_raw_or_ema_for_student_and_teacher(packed, tmp_path):
    import lightning as L

    from dlm.distill import base_method_hparams, distill_hp
    from dlm.train import build_module, load_init_weights

    base = build_module(str(packed), run_cfg("udlm", 1))
    perturb(base.method, seed=3)
    for k in base.ema.shadow:  # an EMA that differs from the raw weights
        base.ema.shadow[k] = base.ema.shadow[k] + 0.5
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(base)
    trainer.save_checkpoint(tmp_path / "base.ckpt")

    hp = distill_hp(base_method_hparams(str(tmp_path / "base.ckpt")), run_cfg("dcd", 1, T=8, transform="poly9"), 2)
    assert hp["algo_args"]["round"] == 2 and hp["model"] == {"size": "nano", "dropout": 0.0}
    raw, ema = dict(base.method.backbone.named_parameters()), base.ema.shadow
    # the original (DUO Alg. 1, SDTT): student and teacher both the raw weights, the default; DUO Alg. 2: EMA teacher
    for weights, teacher, want_s, want_t in (("raw", None, raw, raw), ("ema", None, ema, ema),
                                             ("raw", "ema", raw, ema), ("ema", "raw", ema, raw)):
        student = build_module(str(packed), hp)
        load_init_weights(student, str(tmp_path / "base.ckpt"), weights, teacher)
        teacher_params = dict(student.method.teacher.named_parameters())
        for name, p in student.method.backbone.named_parameters():
            assert torch.equal(p, want_s[name]), (weights, name)
            assert torch.equal(teacher_params[name], want_t[name]), (teacher, name)
            assert torch.equal(p, student.ema.shadow[name])  # the round's EMA restarts from the student
    with pytest.raises(ValueError, match="distils a udlm / duo / dcd model"):
        distill_hp({"algo": "mdlm"}, run_cfg("dcd", 1), 0)


def test_distill_rounds_end_to_end(packed, tmp_path):
    from dlm.diffusion.integral import compute_cache, save_cache
    from dlm.distill import distill_round
    from dlm.sampling import run_sampler
    from dlm.train import train

    train(str(packed), str(tmp_path / "udlm.ckpt"), str(tmp_path / "udlm"), run_cfg("udlm", 12), threads=2)
    base = load_module(str(tmp_path / "udlm.ckpt"))
    cache = tmp_path / "integral.npz"
    save_cache(cache, compute_cache(base.hparams.vocab_size, -5.0, -1.0, 2001))
    prev = tmp_path / "udlm.ckpt"
    for k in range(2):  # rounds 0 and 1: each starts from the previous round's output
        out = tmp_path / "dcd" / f"round{k}.ckpt"
        distill_round(str(prev), str(out), str(packed), str(out.parent), run_cfg("dcd", 3, T=8), k,
                      threads=2, integral_path=str(cache))
        m = load_module(str(out))
        assert m.algo == "dcd" and m.hparams["round"] == k and m.dt == 2 ** k / 8
        assert m.hparams.model == base.hparams.model and "_teacher" not in m.__dict__
        before = dict(load_module(str(prev)).backbone.named_parameters())
        assert any(not torch.equal(p, before[n]) for n, p in m.backbone.named_parameters())  # it trained
        prev = out
    ckpt = torch.load(prev, weights_only=True)
    assert ckpt["global_step"] == 3 and "ema" in ckpt
    assert not any("teacher" in key for key in ckpt["state_dict"])
    out = run_sampler(m, "duo_greedy_tail", 2, 4, torch.Generator().manual_seed(0))
    assert out["tokens"].shape == (2, m.hparams.block_length)
    assert run_sampler(m, "duo_ancestral", 2, 4, torch.Generator().manual_seed(0))["tokens"].shape == (2, 32)

    train(str(packed), str(tmp_path / "mdlm.ckpt"), str(tmp_path / "mdlm"), run_cfg("mdlm", 12), threads=2)
    out = tmp_path / "sdtt" / "round0.ckpt"
    distill_round(str(tmp_path / "mdlm.ckpt"), str(out), str(packed), str(out.parent), run_cfg("sdtt", 3, T=8), 0,
                  threads=2)
    s = load_module(str(out))
    assert s.algo == "sdtt" and s.hparams.time_conditioning is False
    tokens = run_sampler(s, "mdlm_ancestral", 2, 4, torch.Generator().manual_seed(0))["tokens"]
    assert tokens.shape == (2, 32) and not (tokens == s.mask_id).any()
