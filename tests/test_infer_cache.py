"""KV cache: cached decoding == full forward across the sliding-window edge, ragged rows, rollback,
the MTP layer's own cache, and constant ring memory."""

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.infer import KVCache, full_attention_cache_bytes

W = 16  # tiny preset window



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    assert cfg.sliding_window == W
    return KExaone(cfg).eval()


def cached_logits(model, cache, ids, pieces, row=None):
    """Feed ids (1, T) through the cache in pieces of the given sizes; concatenated logits (1, T, V)."""
    out, s = [], 0
    rows = None if row is None else slice(row, row + 1)
    for n in pieces:
        pos = torch.arange(s, s + n)[None]
        cache.begin(pos, rows)
        out.append(model(ids[:, s:s + n], pos, cache=cache).logits)
        cache.commit()
        s += n
    return torch.cat(out, dim=1)


@torch.no_grad()
@pytest.mark.parametrize("pieces", [[1] * 50, [10, 7] + [1] * 33, [16, 16, 16, 2], [30, 3, 17], [50]])
def test_cached_equals_full_forward_across_windows(model, pieces):
    ids = torch.randint(0, 512, (1, sum(pieces)), generator=torch.Generator().manual_seed(1))
    full = model(ids).logits
    cache = KVCache(model.config, 1, 60)
    got = cached_logits(model, cache, ids, pieces)
    torch.testing.assert_close(got, full, atol=2e-5, rtol=1e-4)
    assert cache.lengths.tolist() == [50]


@torch.no_grad()
def test_ragged_batch_decode_matches_each_row_alone(model):
    g = torch.Generator().manual_seed(2)
    lens, extra = [5, 14, 33], 20  # rows start on both sides of the window and decode across it
    seqs = [torch.randint(0, 512, (1, n + extra), generator=g) for n in lens]
    cache = KVCache(model.config, 3, 80)
    for i, (n, s) in enumerate(zip(lens, seqs)):
        cached_logits(model, cache, s[:, :n], [n], row=i)
    steps = []
    for t in range(extra):
        pos = torch.tensor([[n + t] for n in lens])  # (3, 1): every row at its own position
        ids = torch.stack([s[0, n + t] for n, s in zip(lens, seqs)])[:, None]
        cache.begin(pos)
        steps.append(model(ids, pos, cache=cache).logits[:, 0])
        cache.commit()
    got = torch.stack(steps, 1)  # (3, extra, V)
    for i, (n, s) in enumerate(zip(lens, seqs)):
        full = model(s).logits[0, n:]
        torch.testing.assert_close(got[i], full, atol=2e-5, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("start", [10, 15, 16, 33])
def test_rollback_after_rejected_tokens(model, start):
    """Commit 1 of 3 tokens (two rejected drafts), then continue: identical to never seeing them."""
    ids = torch.randint(0, 512, (1, start + 8), generator=torch.Generator().manual_seed(start))
    full = model(ids).logits
    cache = KVCache(model.config, 1, 100)
    cached_logits(model, cache, ids[:, :start], [start])
    bogus = torch.tensor([[ids[0, start], 7, 9]])  # the true next token, then two wrong drafts
    pos = torch.arange(start, start + 3)[None]
    cache.begin(pos)
    model(bogus, pos, cache=cache)
    cache.commit(torch.tensor([1]))
    assert cache.lengths.tolist() == [start + 1]
    rest = []
    for t in range(start + 1, start + 8):
        p = torch.tensor([[t]])
        cache.begin(p)
        rest.append(model(ids[:, t:t + 1], p, cache=cache).logits)
        cache.commit()
    torch.testing.assert_close(torch.cat(rest, 1), full[:, start + 1:], atol=2e-5, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("mtp_type", ["full_attention", "sliding_attention"])
def test_mtp_layer_cache_matches_training_forward(mtp_type):
    torch.manual_seed(3)
    model = KExaone(ModelConfig.preset("tiny").replace(mtp_layer_type=mtp_type)).eval()
    ids = torch.randint(0, 512, (1, 45))
    out = model(ids, return_hidden=True)  # mtp_logits (1, 44, V) from the uncached path
    cache = KVCache(model.config, 1, 64)
    got, s = [], 0
    for n in (20, 1, 1, 5, 17):
        pos = torch.arange(s, s + n)[None]
        cache.begin(pos)
        logits, _ = model.mtp_forward(out.hidden_states[:, s:s + n], ids[:, s + 1:s + n + 1], pos, cache)
        cache.commit()
        got.append(logits)
        s += n
    torch.testing.assert_close(torch.cat(got, 1), out.mtp_logits, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_ring_memory_is_constant_in_sequence_length(model):
    cfg = model.config
    cache = KVCache(cfg, 1, 120, include_mtp=False)
    sliding = [i for i in range(cfg.num_hidden_layers) if cfg.is_sliding(i)]
    before = {i: (cache.k[i].data_ptr(), tuple(cache.k[i].shape)) for i in sliding}
    nbytes = cache.cache_bytes()
    ids = torch.randint(0, 512, (1, 100))
    cached_logits(model, cache, ids, [50] + [1] * 50)
    for i in sliding:  # the very same W-slot buffers, never grown or reallocated
        assert (cache.k[i].data_ptr(), tuple(cache.k[i].shape)) == before[i]
        assert cache.k[i].shape[2] == W
    assert cache.cache_bytes() == nbytes == KVCache.analytic_bytes(cfg, 120, dtype=torch.float32)
    # the sliding part does not depend on the capacity; only global layers grow with it
    small, big = (KVCache.analytic_bytes(cfg, n, dtype=torch.float32) for n in (1000, 2000))
    per_token = 2 * cfg.num_key_value_heads * cfg.head_dim * 4
    n_global = sum(not cfg.is_sliding(i) for i in range(cfg.num_hidden_layers))
    assert big - small == 1000 * per_token * n_global


def test_real_layout_is_a_quarter_of_full_attention_at_256k():
    cfg = ModelConfig.preset("k-exaone-236b")
    n = 256 * 1024
    ratio = KVCache.analytic_bytes(cfg, n) / full_attention_cache_bytes(cfg, n)
    assert 0.25 <= ratio < 0.2505  # 12 global layers of 48, plus 36 x 128 ring slots


def test_protocol_misuse_is_reported(model):
    cache = KVCache(model.config, 2, 10)
    with pytest.raises(RuntimeError, match="outside begin"):
        cache.update(0, torch.zeros(2, 2, 1, 16), torch.zeros(2, 2, 1, 16))
    with pytest.raises(ValueError, match="capacity"):
        cache.begin(torch.tensor([[10], [3]]))
    with pytest.raises(ValueError, match="position_ids"):
        cache.begin(torch.tensor([[1]]))
    cache.begin(torch.tensor([[0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="n_keep"):
        cache.commit(torch.tensor([3, 0]))
