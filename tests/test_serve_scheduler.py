"""The continuous-batching scheduler on a tiny model: greedy rows equal `Engine.generate` whatever the
batch around them, prefill chunks interleave with running decodes, cancellation frees the slot, the
queue is bounded, prompt logprobs are the model's, penalties and seeds behave."""

import threading
import time

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.infer import Engine, SamplingParams
from kexa.infer.engine import GenerationError
from kexa.infer.scheduler import QueueFull, Request, Scheduler


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    return Engine(KExaone(ModelConfig.preset("tiny")), prefill_chunk=8)


class Collector:
    def __init__(self, n):
        self.tokens = [[] for _ in range(n)]
        self.reasons = [None] * n
        self.order = []  # (request index, n tokens) in arrival order
        self.done = threading.Event()
        self.prompt_lp = [None] * n

    def __call__(self, i):
        def on_event(ev):
            self.tokens[i] += ev.tokens
            self.order.append(i)
            if ev.prompt_logprobs is not None:
                self.prompt_lp[i] = ev.prompt_logprobs
            if ev.finish_reason:
                self.reasons[i] = ev.finish_reason
                if all(self.reasons):
                    self.done.set()
        return on_event


GREEDY = SamplingParams(max_new_tokens=12, temperature=0, stop_token_ids=(53,))


def test_greedy_rows_equal_engine_under_continuous_batching(engine):
    prompts = [[5 + i for i in range(n)] for n in (3, 30, 7, 41, 1, 12, 17)]  # 41 > window 16, > chunk 8
    want = [engine.generate([p], GREEDY).token_ids[0] for p in prompts]
    sched = Scheduler(engine, max_batch=3, step_tokens=10).start()  # fewer slots than requests: joins/leaves
    got = Collector(len(prompts))
    for i, p in enumerate(prompts):
        sched.submit(Request(p, GREEDY), got(i))
    assert got.done.wait(60)
    sched.stop()
    assert got.tokens == want
    assert sched.num_running == 0 and sched.num_waiting == 0


def test_prefill_interleaves_with_running_decodes(engine):
    sched = Scheduler(engine, max_batch=2, step_tokens=4)
    got = Collector(2)
    sched.submit(Request([7, 8, 9], SamplingParams(max_new_tokens=30, temperature=0)), got(0))
    sched._admit()
    sched.step()  # prompt 0 prefilled in one step: it now decodes
    sched.submit(Request(list(range(10, 70)), SamplingParams(max_new_tokens=2, temperature=0)), got(1))
    sched._admit()
    for _ in range(10):
        sched.step()
    # 60 prompt tokens at <= 3 per step (budget 4 minus one decode row): still prefilling, while
    # request 0 gained a token on every step
    assert got.tokens[1] == [] and len(got.tokens[0]) == 11
    assert sched.slots[1].prefilled == 30


def test_cancel_frees_the_slot_and_queue_is_bounded(engine):
    sched = Scheduler(engine, max_batch=1, max_waiting=1).start()
    got = Collector(3)
    long = SamplingParams(max_new_tokens=4000, temperature=0)
    a = sched.submit(Request([5, 6], long), got(0))
    b = sched.submit(Request([5, 7], long), got(1)) if _wait(lambda: sched.num_running == 1) else None
    with pytest.raises(QueueFull, match="max_waiting=1"):
        sched.submit(Request([5, 8], long), got(2))
    sched.cancel(b)  # a waiting request leaves the queue
    assert got.reasons[1] == "cancelled" and sched.num_waiting == 0
    sched.cancel(a)
    assert _wait(lambda: sched.num_running == 0)
    assert got.reasons[0] == "cancelled" and len(got.tokens[0]) < 4000
    assert int(sched.cache.lengths[0]) == 0  # the row was reset for the next request
    sched.stop()


def _wait(cond, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_validation_names_both_lengths(engine):
    sched = Scheduler(engine, max_len=64)
    with pytest.raises(GenerationError, match=r"maximum context length is 64 tokens.*70 tokens \(50 in the prompt, 20"):
        sched.validate(Request(list(range(50)), SamplingParams(max_new_tokens=20)))
    with pytest.raises(GenerationError, match="presence_penalty"):
        sched.validate(Request([1], SamplingParams(max_new_tokens=4), presence_penalty=3.0))


def test_prompt_logprobs_are_the_models(engine):
    prompt = [5 + (i * 7) % 50 for i in range(21)]  # three prefill chunks
    sched = Scheduler(engine, max_batch=2, step_tokens=64).start()
    got = Collector(1)
    sched.submit(Request(prompt, SamplingParams(max_new_tokens=1, temperature=0), logprobs=2, prompt_logprobs=2), got(0))
    assert got.done.wait(30)
    sched.stop()
    with torch.no_grad():
        lp = torch.log_softmax(engine.model(torch.tensor([prompt])).logits[0].float(), -1)  # (T, V)
    want = lp[torch.arange(len(prompt) - 1), torch.tensor(prompt[1:])]
    got_lp = got.prompt_lp[0]
    assert got_lp[0] is None and len(got_lp) == len(prompt)
    assert torch.allclose(torch.tensor([x.logprob for x in got_lp[1:]]), want, atol=1e-4)
    assert [x.token for x in got_lp[1:]] == prompt[1:] and len(got_lp[1].top) == 2


def test_seed_replays_and_penalties_change_output(engine):
    def run(**kw):
        sched = Scheduler(engine, max_batch=4).start()
        got = Collector(2)
        for i in range(2):
            sched.submit(Request([5, 6, 7], SamplingParams(max_new_tokens=20, temperature=1.0, seed=3), **kw), got(i))
        assert got.done.wait(30)
        sched.stop()
        return got.tokens

    a = run()
    assert a[0] == a[1]  # same seed, same tokens, whatever the batch
    greedy = engine.generate([[5, 6, 7]], SamplingParams(max_new_tokens=20, temperature=0)).token_ids[0]
    sched = Scheduler(engine).start()
    got = Collector(1)
    sched.submit(Request([5, 6, 7], SamplingParams(max_new_tokens=20, temperature=0), frequency_penalty=2.0), got(0))
    assert got.done.wait(30)
    sched.stop()
    out = got.tokens[0]
    assert max(out.count(t) for t in set(out)) <= max(greedy.count(t) for t in set(greedy))
    assert out != greedy or len(set(greedy)) == len(greedy)
