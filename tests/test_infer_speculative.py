"""MTP self-speculative decoding: greedy output equals plain greedy token for token (k = 1, 2, ragged
rows, across sliding windows, with partial acceptance), and sampled output follows the model's own
distribution (chi-square against the exact joint law of the first new tokens), with a negative
control showing the test detects a wrong acceptance rule."""

import pytest
import torch

import kexa.infer.speculative as spec
from kexa import KExaone, ModelConfig
from kexa.infer import Engine, SamplingParams, token_probs

V = 6  # small vocabulary: random drafts are sometimes right, so acceptance is partial
N_NEW = 4  # joint law of 4 new tokens covers: first token, draft 1, draft 2 and the bonus token


def peaky_model(seed: int, vocab: int = V) -> KExaone:
    """Tiny random model with a sharpened head (distinct, non-uniform p and q)."""
    torch.manual_seed(seed)
    cfg = ModelConfig.preset("tiny").replace(vocab_size=vocab, eos_token_id=None, bos_token_id=1, pad_token_id=0)
    model = KExaone(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(25)
    return model


@pytest.mark.parametrize("k", [1, 2])
def test_speculative_greedy_equals_plain_greedy(k):
    model = peaky_model(0)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, V, (n,), generator=g).tolist() for n in (3, 14, 21)]
    params = SamplingParams(max_new_tokens=40, temperature=0)  # 21 + 40 tokens: several windows of 16
    engine = Engine(model, prefill_chunk=8)
    plain = engine.generate(prompts, params)
    fast = engine.generate(prompts, params, speculative=k)
    assert fast.token_ids == plain.token_ids
    rates = fast.stats.acceptance_per_position
    assert 0 < fast.stats.acceptance_rate < 1, rates  # both the accept and the reject paths ran
    assert fast.stats.steps < plain.stats.steps


def test_speculative_greedy_with_stops_and_penalty():
    model = peaky_model(2, vocab=32)
    prompts = [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11]]
    params = SamplingParams(max_new_tokens=30, temperature=0, repetition_penalty=1.3, stop_token_ids=(9,))
    plain = Engine(model).generate(prompts, params)
    for k in (1, 2):
        assert Engine(model).generate(prompts, params, speculative=k).token_ids == plain.token_ids


@torch.no_grad()
def exact_joint(model, prompt, params, n):
    """P(x_1..x_n | prompt) for every sequence of n new tokens, under the sampling transform."""
    probs = {(): 1.0}
    for _ in range(n):
        prefixes = list(probs)
        ids = torch.tensor([prompt + list(s) for s in prefixes])
        p = token_probs(model(ids).logits[:, -1], params)  # (len(prefixes), V)
        probs = {s + (t,): probs[s] * float(p[i, t]) for i, s in enumerate(prefixes) for t in range(V)}
    return probs


def chi_square_pvalue(samples, expected_probs, n):
    """Pearson chi-square with cells of expectation < 5 pooled into one."""
    counts = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    big = [s for s, p in expected_probs.items() if p * n >= 5]
    obs = [counts.get(s, 0) for s in big]
    exp = [expected_probs[s] * n for s in big]
    rest_exp = n - sum(exp)
    if rest_exp > 0:
        obs.append(n - sum(obs))
        exp.append(rest_exp)
    obs, exp = torch.tensor(obs, dtype=torch.float64), torch.tensor(exp, dtype=torch.float64)
    stat = ((obs - exp) ** 2 / exp).sum()
    df = len(exp) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2))


def sample_sequences(model, prompt, params, k, n):
    result = Engine(model).generate([prompt] * n, params, speculative=k)
    return [tuple(t) for t in result.token_ids], result.stats


@pytest.mark.parametrize("k, temperature, top_p", [(1, 1.0, 1.0), (2, 1.0, 1.0), (2, 0.8, 0.9)])
def test_speculative_sampling_matches_the_model_distribution(k, temperature, top_p):
    model = peaky_model(3)
    prompt = [1, 4, 2, 5, 3]
    params = SamplingParams(max_new_tokens=N_NEW, temperature=temperature, top_p=top_p, seed=11)
    exact = exact_joint(model, prompt, params, N_NEW)
    n = 3000
    samples, stats = sample_sequences(model, prompt, params, k, n)
    assert all(len(s) == N_NEW for s in samples)
    assert 0.05 < stats.acceptance_rate < 0.95  # the test exercises acceptance and rejection
    assert chi_square_pvalue(samples, exact, n) > 1e-3


def test_the_statistical_test_catches_a_wrong_acceptance_rule(monkeypatch):
    """Negative control: accepting every draft (sampling from q) is detected by the same test."""
    model = peaky_model(3)
    prompt = [1, 4, 2, 5, 3]
    params = SamplingParams(max_new_tokens=N_NEW, temperature=1.0, seed=11)
    exact = exact_joint(model, prompt, params, N_NEW)
    real = spec.accept_drafts

    def accept_all(p, q, drafts, generator):
        a, _ = real(p, q, drafts, generator)
        b, kk = drafts.shape
        bonus = torch.multinomial(p[:, kk], 1, generator=generator).squeeze(-1)
        return torch.full_like(a, kk), bonus

    monkeypatch.setattr(spec, "accept_drafts", accept_all)
    samples, _ = sample_sequences(model, prompt, params, 1, 3000)
    assert chi_square_pvalue(samples, exact, 3000) < 1e-6


def test_acceptance_rule_unit():
    """p == q: every draft accepted; disjoint supports: always rejected and resampled from p."""
    p = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # (1, k+1=2, 3)
    a, y = spec.accept_drafts(p, p[:, :1], torch.tensor([[1]]), None)
    assert a.tolist() == [1] and y.tolist() == [2]  # accepted, bonus from p_1
    q = torch.tensor([[[1.0, 0.0, 0.0]]])
    for _ in range(5):
        a, y = spec.accept_drafts(p, q, torch.tensor([[0]]), None)
        assert a.tolist() == [0] and y.tolist() == [1]
