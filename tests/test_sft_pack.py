"""SFT packing: best fit, conversations never cross (token by token), document-masked attention equals
each document alone, assistant-only loss equals a hand-masked CE, exact resume of the data stream,
too-long conversations give an error naming their origin or are skipped with a count."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from kexa import KExaone, ModelConfig
from kexa.data.sft_pack import (IGNORE, ConversationError, ListSource, PackedConversations, TaskSource, best_fit,
                                pack_rows, render_conversations)
from kexa.train.loop import model_loss
from sft_fixtures import AddTask, make_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def source(tok, seq_len=64, batch=3, seed=0, ratio=0.5, tiers=(1, 2), **kw):
    task = TaskSource("add", AddTask(), tok, ["en", "ko"], list(tiers), ratio)
    return PackedConversations([task], [1.0], seq_len, batch, tok.pad_id, seed=seed, buffer=24, **kw)


def test_best_fit_packs_every_item_once_within_capacity_and_nearly_optimally():
    rng = random.Random(0)
    for _ in range(50):
        cap = rng.randint(20, 200)
        lengths = [rng.randint(1, cap) for _ in range(rng.randint(1, 80))]
        bins = best_fit(lengths, cap)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= cap for b in bins)
        lower = math.ceil(sum(lengths) / cap)
        assert len(bins) <= 11 / 9 * lower + 1  # the BFD bound (Johnson 1973: 11/9 OPT + 6/9)
    assert best_fit([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]  # 6+2, 5+3, 4: tightest fits
    with pytest.raises(ValueError, match="exceeds"):
        best_fit([9], 8)


def test_packing_never_crosses_a_conversation_token_by_token(tok):
    src = source(tok)
    for _ in range(4):
        rows = src.next_rows(3)
        x, y, docs = pack_rows(rows, 64, tok.pad_id)
        for b, row in enumerate(rows):
            at = 0
            for d, item in enumerate(row):  # each conversation: its own ids, one document id, its own labels
                n = len(item.ids)
                span = slice(at, min(at + n, 64))
                assert x[b, span].tolist() == item.ids[:span.stop - at]
                assert (docs[b, span] == d).all()
                for t in range(span.start, span.stop):
                    i = t - at
                    want = item.ids[i + 1] if i + 1 < n and item.mask[i + 1] else IGNORE
                    assert y[b, t] == want, (b, t)
                at += n
            assert (docs[b, at:] == len(row)).all() and (y[b, at:] == IGNORE).all() and (x[b, at:] == tok.pad_id).all()
        assert (y != IGNORE).sum() > 0
    # a conversation's last label is its <|endofturn|> (trained), never the next conversation's first token
    for b in range(x.shape[0]):
        boundary = (docs[b, 1:] != docs[b, :-1]).nonzero().flatten()
        for t in boundary.tolist():
            labels = [int(v) for v in y[b, :t + 1] if v != IGNORE]
            assert int(y[b, t]) == IGNORE and labels[-1] == tok.eos_id


def test_both_modes_are_rendered_in_the_recipe_ratio(tok):
    for ratio, lo, hi in ((0.0, 0, 0), (1.0, 1, 1), (0.3, 0.15, 0.45)):
        src = source(tok, ratio=ratio)
        items = [it for _ in range(4) for row in src.next_rows(3) for it in row]
        share = sum(it.reasoning for it in items) / len(items)
        assert lo <= share <= hi, (ratio, share)
        for it in items:
            text = tok.decode(it.ids)
            assert ("<think>\n\n</think>" in text) != it.reasoning  # empty think block iff non-reasoning


def test_document_masked_attention_equals_each_document_alone():
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny")).eval()  # window 16 < the documents: sliding layers matter
    lengths = [23, 41, 30]
    docs_ids = [torch.randint(1, 512, (n,)) for n in lengths]
    row = torch.cat(docs_ids + [torch.zeros(6, dtype=torch.long)])[None]  # (1, 100) with padding
    doc = torch.cat([torch.full((n,), d) for d, n in enumerate(lengths + [6])])[None]
    with torch.no_grad():
        packed = model(row, document_ids=doc)
        at = 0
        for ids in docs_ids:
            alone = model(ids[None])
            n = len(ids)
            torch.testing.assert_close(packed.logits[0, at:at + n], alone.logits[0], atol=2e-5, rtol=1e-4)
            # MTP at t pairs h_t with token t+1: inside the document for t < n - 1
            torch.testing.assert_close(packed.mtp_logits[0, at:at + n - 1], alone.mtp_logits[0], atol=2e-5, rtol=1e-4)
            at += n
        plain = model(row)  # without document ids: the documents do interact
    assert not torch.allclose(plain.logits[0, 23:64], packed.logits[0, 23:64], atol=1e-3)


def test_assistant_only_loss_equals_a_hand_masked_cross_entropy(tok):
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size)).eval()
    src = source(tok, seq_len=96, batch=2)
    rows = src.next_rows(2)
    x, y, docs = pack_rows(rows, 96, tok.pad_id)
    with torch.no_grad():
        _, parts, _ = model_loss(model, (x, y, {"document_ids": docs}), mtp_weight=0.0, balance_coef=0.0)
        total, count = 0.0, 0
        for item in (it for row in rows for it in row):  # each conversation alone, masked by hand
            ids, mask = torch.tensor(item.ids), torch.tensor(item.mask)
            logits = model(ids[None]).logits[0, :-1]
            ce = F.cross_entropy(logits.float(), ids[1:], reduction="none")
            keep = mask[1:].bool()
            total, count = total + float(ce[keep].sum()), count + int(keep.sum())
    assert count == int((y != IGNORE).sum()) and count > 0
    assert float(parts["ce"]) == pytest.approx(total / count, rel=1e-5)


def test_the_stream_resumes_exactly_mid_buffer(tok):
    a = source(tok, seed=3)
    for _ in range(5):
        a.next_batch()
    state = a.state_dict()
    want = [a.next_batch() for _ in range(12)]  # crosses into later buffers
    b = source(tok, seed=3)
    b.load_state_dict(state)
    got = [b.next_batch() for _ in range(12)]
    for (x1, y1, d1), (x2, y2, d2) in zip(want, got):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(d1["document_ids"], d2["document_ids"])
    with pytest.raises(ValueError, match="seq_len"):
        source(tok, seq_len=80, seed=3).load_state_dict(state)


def test_ranks_split_the_global_batch(tok):
    whole = source(tok, batch=4, seed=1)
    ranks = [source(tok, batch=2, seed=1, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        x, y, d = whole.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert ranks[0].state_dict() == ranks[1].state_dict()  # every rank holds the same stream state


def test_a_too_long_conversation_is_an_error_naming_it_or_skipped_with_a_count(tok):
    with pytest.raises(ConversationError, match=r"task add \((en|ko), tier 9, reasoning\).*does not fit"):
        source(tok, seq_len=64, ratio=1.0, tiers=(1, 9))
    src = source(tok, seq_len=64, ratio=1.0, tiers=(1, 9), skip_bad=True)
    src.next_batch()
    assert src.skipped > 0
    with pytest.raises(ConversationError, match="consecutive conversations skipped"):
        source(tok, seq_len=64, ratio=1.0, tiers=(9,), skip_bad=True, max_bad=20)
    rows = [{"messages": [{"role": "user", "content": "1 + 1"}, {"role": "assistant", "content": "2"}]},
            {"messages": [{"role": "user", "content": "9 " * 200}, {"role": "assistant", "content": "9"}],
             "origin": "chat.jsonl:2"},
            {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "2"}]},
            {"messages": [{"role": "user", "content": "only a prompt"}]}]
    with pytest.raises(ConversationError, match=r"^chat.jsonl:2: conversation of \d+ tokens does not fit"):
        render_conversations(tok, rows, "chat.jsonl", 65)
    with pytest.raises(ConversationError, match=r"^chat.jsonl:2: cannot render the conversation: unknown role: robot"):
        render_conversations(tok, [rows[0], rows[2]], "chat.jsonl", 65)
    with pytest.raises(ConversationError, match=r"^chat.jsonl:1: conversation has no assistant tokens"):
        render_conversations(tok, rows[3:], "chat.jsonl", 65)
    items, skipped = render_conversations(tok, rows, "chat.jsonl", 65, skip_bad=True)
    assert len(items) == 1 and skipped == 3
    file_src = ListSource("chat", items)
    stream = PackedConversations([file_src], [1.0], 64, 2, tok.pad_id, buffer=4)
    x, y, _ = stream.next_batch()
    assert (y != IGNORE).sum() > 0 and file_src.cursor[0] >= 1  # the one conversation, epoch after epoch


def test_positions_restart_in_each_document():
    from kexa.model.transformer import positions_in_documents
    docs = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1, 1, 1]])
    assert positions_in_documents(docs).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 0, 1, 2, 3, 4, 5, 6, 7]]
