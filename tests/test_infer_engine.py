"""Engine: greedy == a naive full-forward loop on ragged batches with chunked prefill, stop tokens,
limits, seeded sampling, streaming, sampling transforms, and clear errors for bad requests."""

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.infer import Engine, GenerationError, SamplingParams, token_probs

GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return KExaone(ModelConfig.preset("tiny")).eval()


@torch.no_grad()
def naive_greedy(model, prompt, n):
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def prompts_for(lengths, seed=0, vocab=512):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def test_greedy_ragged_batch_with_chunked_prefill_equals_full_forward(model):
    prompts = prompts_for([3, 17, 30])
    engine = Engine(model, prefill_chunk=8)  # 30 tokens -> 4 chunks, crossing the window of 16
    result = engine.generate(prompts, SamplingParams(max_new_tokens=20, **GREEDY))
    for p, got in zip(prompts, result.token_ids):
        assert got == naive_greedy(model, p, 20)
    assert result.finish_reasons == ["length"] * 3
    assert result.stats.new_tokens == 60 and result.stats.prompt_tokens == 50


def test_compiled_decode_step_matches_eager_and_reuses_its_trace(model):
    """Engine(compile=True): the inductor-compiled decode step (static shapes, per-assignment experts,
    whole-buffer global attention) gives the eager engine's greedy tokens on a ragged batch with a
    stop token, and a second request of another length in the same cache bucket compiles nothing new."""
    from torch._dynamo.utils import counters

    prompts = prompts_for([4, 19, 11], seed=3)
    params = SamplingParams(max_new_tokens=24, **GREEDY)
    want = Engine(model).generate(prompts, params)
    stop = want.token_ids[1][5]
    engine = Engine(model, compile=True)
    got = engine.generate(prompts, params)
    assert got.token_ids == want.token_ids and got.finish_reasons == want.finish_reasons
    traced = counters["stats"]["unique_graphs"]
    shorter = SamplingParams(max_new_tokens=9, stop_token_ids=(stop,), **GREEDY)
    assert engine.generate(prompts, shorter).token_ids == Engine(model).generate(prompts, shorter).token_ids
    assert counters["stats"]["unique_graphs"] == traced > 0


def test_stop_tokens_end_one_row_and_not_the_others(model):
    prompts = prompts_for([6, 9], seed=1)
    engine = Engine(model)
    free = engine.generate(prompts, SamplingParams(max_new_tokens=12, **GREEDY)).token_ids
    stop = free[0][4]
    cut = free[0].index(stop) + 1
    result = engine.generate(prompts, SamplingParams(max_new_tokens=12, stop_token_ids=(stop,), **GREEDY))
    assert result.token_ids[0] == free[0][:cut] and result.finish_reasons[0] == "stop"
    if stop not in free[1]:
        assert result.token_ids[1] == free[1] and result.finish_reasons[1] == "length"


def test_context_limit_ends_generation(model):
    small = KExaone(model.config.replace(max_position_embeddings=24))
    small.load_state_dict(model.state_dict())
    result = Engine(small).generate(prompts_for([20]), SamplingParams(max_new_tokens=50, **GREEDY))
    assert len(result.token_ids[0]) == 4 and result.finish_reasons == ["length"]


def test_seeded_sampling_is_reproducible_and_streaming_matches(model):
    engine = Engine(model)
    prompts = prompts_for([5, 12], seed=2)
    params = SamplingParams(max_new_tokens=15, temperature=0.9, top_p=0.9, top_k=40, seed=7)
    a = engine.generate(prompts, params).token_ids
    assert engine.generate(prompts, params).token_ids == a
    assert engine.generate(prompts, SamplingParams(max_new_tokens=15, temperature=0.9, seed=8)).token_ids != a
    streamed = [[], []]
    generation = engine.stream(prompts, params)
    for step in generation:
        for i, toks in enumerate(step.tokens):
            streamed[i] += toks
    assert streamed == a == generation.token_ids


def test_first_token_follows_the_softmax(model):
    """Many rows, one sampled token each: empirical frequencies match the model's probabilities."""
    small = KExaone(model.config.replace(vocab_size=8, eos_token_id=None)).eval()
    prompt = [1, 2, 3, 4, 5]
    n = 4000
    result = Engine(small).generate([prompt] * n, SamplingParams(max_new_tokens=1, temperature=1.0, seed=0))
    counts = torch.bincount(torch.tensor([t[0] for t in result.token_ids]), minlength=8).float()
    with torch.no_grad():
        p = torch.softmax(small(torch.tensor([prompt])).logits[0, -1], -1)
    assert (counts / n - p).abs().sum() / 2 < 0.03  # TV; sampling noise is ~0.01 at n = 4000


def test_token_probs_transforms():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    assert token_probs(logits, SamplingParams(temperature=0)).tolist() == [[1.0, 0, 0, 0, 0]]
    top2 = token_probs(logits, SamplingParams(top_k=2))
    assert (top2[0, 2:] == 0).all() and torch.allclose(top2[0, :2], torch.softmax(logits[0, :2], -1))
    p = torch.softmax(logits, -1)[0]
    nucleus = token_probs(logits, SamplingParams(top_p=float(p[0] + 0.01)))  # needs the top 2
    assert (nucleus[0, :2] > 0).all() and (nucleus[0, 2:] == 0).all()
    just_top = token_probs(logits, SamplingParams(top_p=float(p[0] - 0.01)))
    assert just_top[0].tolist() == [1.0, 0, 0, 0, 0]
    seen = torch.tensor([[True, False, False, True, False]])
    pen = token_probs(logits, SamplingParams(temperature=0, repetition_penalty=3.0), seen)
    assert pen.argmax().item() == 1  # 2.0 / 3 < 1.0: the seen top token loses
    hot = token_probs(logits, SamplingParams(temperature=0.1))
    assert hot[0, 0] > 0.99


@pytest.mark.parametrize("kw, msg", [
    (dict(temperature=-1), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=-2), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(repetition_penalty=0), "repetition_penalty")])
def test_invalid_sampling_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SamplingParams(**kw)


def test_bad_requests_raise_before_any_work(model):
    engine = Engine(model)
    params = SamplingParams(max_new_tokens=4)
    with pytest.raises(GenerationError, match="empty"):
        engine.stream([[]], params)
    with pytest.raises(GenerationError, match="max_position_embeddings"):
        engine.stream([[1] * model.config.max_position_embeddings], params)
    with pytest.raises(GenerationError, match="outside"):
        engine.stream([[1, 512]], params)
    with pytest.raises(GenerationError, match="no prompts"):
        engine.stream([], params)
    with pytest.raises(GenerationError, match="1 or 2"):
        engine.stream([[1]], params, speculative=3)
    no_mtp = KExaone(model.config.replace(num_nextn_predict_layers=0))
    with pytest.raises(GenerationError, match="MTP"):
        Engine(no_mtp).stream([[1]], params, speculative=1)


def test_moe_decode_has_no_python_loop_over_experts(model, monkeypatch):
    """A decode step routes through one grouped matmul per projection, not one matmul per expert."""
    import kexa.model.moe as moe

    calls = []
    real = moe.grouped_matmul
    monkeypatch.setattr(moe, "grouped_matmul", lambda *a: calls.append(1) or real(*a))
    if not moe.HAS_GROUPED_MM:
        pytest.skip("torch._grouped_mm missing: the model falls back to a per-expert loop")
    Engine(model).generate([[1, 2, 3]], SamplingParams(max_new_tokens=3, **GREEDY))
    steps = 3  # prefill + 2 decode steps
    assert len(calls) == steps * 2 * len(model.config.moe_layers)
