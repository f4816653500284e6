"""Token shards (dtype by vocabulary, document boundaries, completeness) and the packed mixture loader
(curriculum stages, rank sharding, exact resume, no learning across documents)."""

import json

import numpy as np
import pytest
import torch

from kexa.data.loader import Curriculum, PackedLoader, Stage, heldout_batches
from kexa.data.shards import ShardError, TokenShards, token_dtype, write_shards


def docs(n, vocab, seed, lo=5, hi=60):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, rng.integers(lo, hi)).tolist() for _ in range(n)]


def test_shards_round_trip_dtype_and_boundaries(tmp_path):
    d = docs(50, 500, 0)
    meta = write_shards(d, tmp_path / "a", vocab_size=512, eos_id=0, shard_tokens=300)
    assert meta["dtype"] == "uint16" and len(meta["shards"]) > 1
    sh = TokenShards(tmp_path / "a")
    stream = np.concatenate([np.append(x, 0) for x in d])
    assert sh.n_tokens == stream.size
    assert (sh.window(0, sh.n_tokens) == stream).all()  # spans every shard
    assert (sh.window(250, 200) == stream[250:450]).all()
    starts = sh.doc_starts()
    assert len(starts) == 50 and (stream[starts[1:] - 1] == 0).all()  # each doc ends with EOS
    assert token_dtype(153600) == np.uint32
    big = write_shards([[70000, 153599]], tmp_path / "b", vocab_size=153600)
    assert big["dtype"] == "uint32" and TokenShards(tmp_path / "b").window(0, 2).tolist() == [70000, 153599]


def test_shards_refuse_bad_ids_and_incomplete_folders(tmp_path):
    with pytest.raises(ShardError, match="out of range"):
        write_shards([[1, 600]], tmp_path / "x", vocab_size=512)
    write_shards([[1, 2, 3]], tmp_path / "y", vocab_size=512)
    (tmp_path / "y" / "meta.json").unlink()  # an interrupted build
    with pytest.raises(ShardError, match="not a complete"):
        TokenShards(tmp_path / "y")
    write_shards([[1, 2, 3]], tmp_path / "z", vocab_size=512)
    with open(tmp_path / "z" / "shard_00000.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ShardError, match="wrong size"):
        TokenShards(tmp_path / "z")


@pytest.fixture
def sources(tmp_path):
    out = {}
    for i, name in enumerate(["web", "code", "math"]):
        # each source uses its own id range so a batch row reveals its source
        d = [[t % 100 + 100 * (i + 1) for t in x] for x in docs(80, 100, i)]
        write_shards(d, tmp_path / name, vocab_size=512, eos_id=0)
        out[name] = TokenShards(tmp_path / name)
    return out


def source_of(row):
    return {1: "web", 2: "code", 3: "math"}[int(row[row > 0].max()) // 100]


def make(sources, stages, steps=20, **kw):
    kw = {"seq_len": 32, "batch_size": 4, "seed": 3} | kw
    return PackedLoader(sources, curriculum=Curriculum(stages, steps, list(sources)), **kw)


def test_curriculum_stages_switch_the_mixture(sources):
    stages = [Stage("foundation", 0.5, {"web": 1.0}), Stage("reasoning", 0.5, {"math": 3.0, "code": 1.0})]
    loader = make(sources, stages, steps=10)
    seen = []
    for _ in range(10):
        x, _ = loader.next_batch()
        seen.append({source_of(r) for r in x})
    assert all(s == {"web"} for s in seen[:5])
    assert all("web" not in s for s in seen[5:]) and set().union(*seen[5:]) == {"math", "code"}
    with pytest.raises(ValueError, match="unknown source"):
        Curriculum([Stage("s", 1.0, {"wiki": 1.0})], 10, list(sources))


def test_labels_are_shifted_and_masked_after_eos(sources):
    x, y = make(sources, [Stage("s", 1.0, {"web": 1.0})]).next_batch()
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    keep = x[:, :-1] != 0
    assert (y[:, :-1][keep] == x[:, 1:][keep]).all()  # labels[t] = x[t+1]
    assert (y[x == 0] == -100).all() and (x == 0).any()  # no target across a document boundary


def test_ranks_split_the_global_batch_exactly(sources):
    stages = [Stage("s", 1.0, {"web": 1.0, "code": 1.0, "math": 1.0})]
    one = make(sources, stages, batch_size=4)
    two = [make(sources, stages, batch_size=2, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        x, y = one.next_batch()
        parts = [ld.next_batch() for ld in two]
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(y, torch.cat([p[1] for p in parts]))
    assert two[0].state_dict() == two[1].state_dict()  # rank-invariant state: rank 0's checkpoint serves all


def test_resume_is_exact_across_epochs(sources):
    stages = [Stage("a", 0.5, {"web": 1.0, "math": 1.0}), Stage("b", 0.5, {"code": 1.0})]
    ref = make(sources, stages, steps=40)
    batches = [ref.next_batch()[0] for _ in range(40)]  # several epochs over the small sources
    first = make(sources, stages, steps=40)
    for _ in range(17):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # survives serialisation
    second = make(sources, stages, steps=40)
    second.load_state_dict(state)
    assert all(torch.equal(second.next_batch()[0], b) for b in batches[17:])
    other = make(sources, stages, steps=40, seq_len=16)
    with pytest.raises(ValueError, match="seq_len"):
        other.load_state_dict(state)


def test_heldout_batches_are_fixed_and_rank_split(sources):
    full = heldout_batches(sources, 32, 4, 2)
    assert [n for n, *_ in full].count("web") == 2
    halves = [heldout_batches(sources, 32, 2, 2, rank=r, world_size=2) for r in range(2)]
    assert sum(b[1].shape[0] for h in halves for b in h) == sum(b[1].shape[0] for b in full)
