"""MTP self-speculation in the continuous-batching scheduler and `kexa serve --speculative`.

Per-request sampling stays exact row by row: greedy requests (with stops, repetition and
presence/frequency penalties, across sliding windows, while other requests join and leave) equal
plain decoding token for token; sampled requests at different temperatures / top-k / top-p /
penalties in ONE batch each follow their own exact law (chi-square against the enumerated joint law
of the first new tokens). Through the server: greedy chat with --speculative equals the engine's
plain greedy output, the acceptance metrics are exposed and agree with the per-request counts, a
mixed-temperature burst finishes, and bad option combinations get one clear error.
"""

import dataclasses
import threading

import httpx
import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.infer import Engine, SamplingParams
from kexa.infer.scheduler import Request, Scheduler
from kexa.infer.sampling import token_probs
from kexa.infer.cli import UsageError
from kexa.serve.cli import _parser, build
from test_infer_speculative import chi_square_pvalue
from test_serve import HI, Live, _folder

V = 6  # small vocabulary: the random MTP block's drafts are sometimes right (partial acceptance)


def peaky_engine(seed: int = 0, vocab: int = V) -> Engine:
    torch.manual_seed(seed)
    cfg = ModelConfig.preset("tiny").replace(vocab_size=vocab, eos_token_id=None, bos_token_id=1, pad_token_id=0)
    model = KExaone(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(25)
    return Engine(model, prefill_chunk=8)


def run(sched: Scheduler, requests: list[Request], timeout: float = 120.0) -> list[list[int]]:
    """Submit all, wait for all; returns each request's tokens (errors fail the test)."""
    out = [[] for _ in requests]
    left = [len(requests)]
    done = threading.Event()

    def on(i):
        def f(ev):
            assert ev.finish_reason != "error", ev.error
            out[i] += ev.tokens
            if ev.finish_reason:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
        return f

    sched.start()
    for i, r in enumerate(requests):
        sched.submit(r, on(i))
    assert done.wait(timeout), sched.last_error
    sched.stop()
    assert sched.num_running == 0 and sched.num_waiting == 0
    return out


@pytest.mark.parametrize("k", [1, 2])
def test_greedy_equals_plain_greedy_under_continuous_batching(k):
    engine = peaky_engine()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, V, (n,), generator=g).tolist() for n in (3, 30, 7, 41, 1, 12, 17)]
    # every other request stops at token 5 (early, on this model), the rest run to the length limit
    params = [SamplingParams(max_new_tokens=40, temperature=0, stop_token_ids=(5,) if i % 2 else ())
              for i in range(len(prompts))]
    want = [engine.generate([p], ps).token_ids[0] for p, ps in zip(prompts, params)]
    sched = Scheduler(engine, max_batch=3, step_tokens=12, speculative=k)  # joins/leaves, prefill interleaves
    reqs = [Request(p, ps) for p, ps in zip(prompts, params)]
    assert run(sched, reqs) == want
    assert any(len(w) < 40 for w in want) and any(len(w) == 40 for w in want)  # both stop and length cuts
    # per-request acceptance adds up to the scheduler's totals; both accept and reject paths ran
    assert sum(r.drafted for r in reqs) == sum(sched.spec_drafted) == k * sched.spec_steps
    assert sum(r.accepted for r in reqs) == sum(sched.spec_accepted)
    assert 0 < sum(sched.spec_accepted) < sum(sched.spec_drafted)


def test_greedy_with_penalties_equals_the_plain_scheduler():
    engine = peaky_engine(2, vocab=32)
    prompts = [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11], [3] * 20]
    kinds = [dict(), dict(frequency_penalty=1.5), dict(presence_penalty=1.0, frequency_penalty=0.3)]

    def reqs():
        p = SamplingParams(max_new_tokens=25, temperature=0, repetition_penalty=1.3)
        return [Request(pr, p if i else SamplingParams(max_new_tokens=25, temperature=0), **kw)
                for pr in prompts for i, kw in enumerate(kinds)]

    want = run(Scheduler(engine, max_batch=4), reqs())
    for k in (1, 2):
        assert run(Scheduler(engine, max_batch=4, speculative=k), reqs()) == want


@torch.no_grad()
def exact_joint(model, prompt, params: SamplingParams, n: int, presence=0.0, frequency=0.0):
    """P(x_1..x_n | prompt) for every n-token continuation, under the request's transform
    (presence/frequency penalties count the generated tokens, as the scheduler does)."""
    probs = {(): 1.0}
    for _ in range(n):
        prefixes = list(probs)
        logits = model(torch.tensor([prompt + list(s) for s in prefixes])).logits[:, -1].float()  # (m, V)
        counts = torch.zeros(len(prefixes), V)
        for i, s in enumerate(prefixes):
            for t in s:
                counts[i, t] += 1
        p = token_probs(logits - presence * (counts > 0) - frequency * counts, params)
        probs = {s + (t,): probs[s] * float(p[i, t]) for i, s in enumerate(prefixes) for t in range(V)}
    return probs


def test_mixed_batch_each_row_follows_its_own_law(k=2):
    """One batch mixes four transforms; every group's samples fit its exact law, greedy rows are
    greedy. k = 2 exercises both draft positions, the residual and the bonus token. (Checked by hand:
    giving every row the first row's transform fails the fit of the other groups.)"""
    engine = peaky_engine(3)
    prompt, n_new, n = [1, 4, 2, 5, 3], 3, 600
    groups = [
        (SamplingParams(max_new_tokens=n_new, temperature=1.0), {}),
        (SamplingParams(max_new_tokens=n_new, temperature=0.6, top_k=4, top_p=0.9), {}),
        (SamplingParams(max_new_tokens=n_new, temperature=1.0), dict(presence_penalty=0.5, frequency_penalty=1.0)),
    ]
    greedy = SamplingParams(max_new_tokens=n_new, temperature=0)
    reqs, kind = [], []
    for i in range(n):  # interleaved: neighbouring rows of every step differ
        for g, (params, kw) in enumerate(groups):
            reqs.append(Request(prompt, dataclasses.replace(params, seed=1000 * g + i), **kw))
            kind.append(g)
        if i % 50 == 0:
            reqs.append(Request(prompt, greedy))
            kind.append(-1)
    sched = Scheduler(engine, max_batch=256, max_waiting=len(reqs), speculative=k)
    out = run(sched, reqs, timeout=300)
    want_greedy = engine.generate([prompt], greedy).token_ids[0]
    assert all(o == want_greedy for o, g in zip(out, kind) if g == -1)
    for g, (params, kw) in enumerate(groups):
        samples = [tuple(o) for o, kk in zip(out, kind) if kk == g]
        exact = exact_joint(engine.model, prompt, params, n_new, kw.get("presence_penalty", 0.0),
                            kw.get("frequency_penalty", 0.0))
        assert chi_square_pvalue(samples, exact, n) > 1e-3, g
    assert 0.05 < sum(sched.spec_accepted) / sum(sched.spec_drafted) < 0.95


# ---------------------------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("serve_spec"), memorise=False)


@pytest.fixture(scope="module")
def live(folder):
    srv = Live(folder, "--max-batch", 8, "--speculative", 2)
    yield srv
    srv.close()


def metric(text: str, name: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(name + "{")).split()[-1])


def test_server_greedy_equals_plain_and_exposes_acceptance(live, folder):
    from kexa.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(folder)
    ids = tok.encode_chat(HI, add_generation_prompt=True).ids
    want = Engine(KExaone.from_pretrained(folder)).generate(
        [ids], SamplingParams(max_new_tokens=24, temperature=0, stop_token_ids=(53,))).token_ids[0]
    r = live.client.chat.completions.create(model="tiny", messages=HI, max_tokens=24, temperature=0, logprobs=True)
    assert [x.token for x in r.choices[0].logprobs.content] == [tok.decode([t]) for t in want]
    chunks = list(live.client.chat.completions.create(model="tiny", messages=HI, max_tokens=24, temperature=0,
                                                      logprobs=True, stream=True))
    assert [x.token for c in chunks if c.choices and c.choices[0].logprobs
            for x in c.choices[0].logprobs.content] == [tok.decode([t]) for t in want]
    text = httpx.get(live.url + "/metrics").text
    sched = live.scheduler
    proposed = metric(text, "kexa:spec_decode_num_draft_tokens_total")
    assert proposed == sum(sched.spec_drafted) > 0
    assert metric(text, "kexa:spec_decode_num_accepted_tokens_total") == sum(sched.spec_accepted)
    assert metric(text, "kexa:spec_decode_num_drafts_total") * 2 == proposed
    assert metric(text, "kexa:spec_decode_acceptance_rate") == pytest.approx(sum(sched.spec_accepted) / proposed)
    assert 'kexa:spec_decode_num_accepted_tokens_per_pos_total{model_name="tiny",position="1"}' in text


def test_server_mixed_temperatures_burst(live):
    import concurrent.futures as cf

    def ask(i):
        return live.client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"Say hi {i}"}], max_tokens=12,
            temperature=[0, 0.7, 1.0, 1.3][i % 4], top_p=[1.0, 0.9][i % 2], seed=i)

    with cf.ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(ask, range(12)))
    assert all(r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0 for r in replies)
    assert live.running() == 0


@pytest.mark.parametrize("extra, message", [
    (["--speculative", "3"], "K must be 1 or 2"),
    (["--speculative", "1", "--compile"], "do not combine"),
])
def test_bad_speculative_options(folder, extra, message):
    with pytest.raises(UsageError, match=message):
        build(_parser().parse_args(["--model", str(folder), *extra]))


def test_speculative_needs_an_mtp_block(tmp_path, folder):
    from kexa.tokenizer import Tokenizer

    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=KExaone.from_pretrained(folder).config.vocab_size,
                                                       num_nextn_predict_layers=0))
    model.save_pretrained(tmp_path)
    Tokenizer.from_pretrained(folder).save_pretrained(tmp_path)
    with pytest.raises(UsageError, match="needs the MTP block"):
        build(_parser().parse_args(["--model", str(tmp_path), "--speculative"]))
