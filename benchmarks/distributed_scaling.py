"""Distributed training step throughput (tokens/s) on 2 gloo ranks: kexa FSDP2, kexa FSDP2 + expert
parallelism, and the peer, transformers' ExaoneMoeForCausalLM under plain FSDP2 (`fully_shard` per
decoder layer + root, the usual recipe), on the same `nano` weights.

All three run inside ONE torchrun job, alternating in chunks of --chunk steps for --rounds rounds
(the first 2 steps of each chunk are not timed); each step is forward + backward + grad clip +
AdamW on the same global batch (--batch sequences per rank of --seq tokens), fp32, one thread per
rank, MTP off (the HF model has none). Medians and kexa/HF ratios are printed (and written with
--out). The machine's 2 cores are shared with other jobs: compare ratios, not absolute numbers.
What EP changes: FSDP all-gathers every expert stack each step (most of nano's weights); EP keeps
each rank's experts local and moves tokens instead (2 all-to-alls per MoE layer each way).

    OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node=2 benchmarks/distributed_scaling.py \
        --chunk 4 --rounds 3 --out benchmarks/results/distributed_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4, help="sequences per rank")
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the medians as JSON here (rank 0)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from torch.distributed.fsdp import fully_shard
    from transformers import ExaoneMoeConfig, ExaoneMoeForCausalLM

    from kexa import KExaone, ModelConfig
    from kexa.train import dist as D
    from kexa.train import parallel as P

    mesh = P.init_distributed(ep_size=int(os.environ["WORLD_SIZE"]))
    cfg = ModelConfig.preset(args.preset).replace(num_nextn_predict_layers=0)
    # the same weights everywhere: rank 0 writes one HF folder that all three models load
    folder = Path(tempfile.gettempdir()) / f"kexa-dist-bench-{os.environ.get('TORCHELASTIC_RUN_ID', 'x')}"
    if D.is_main():
        torch.manual_seed(0)
        KExaone(cfg).save_pretrained(folder)
    D.barrier()

    def kexa(ep: bool):
        model = KExaone.from_pretrained(folder).train()
        return P.parallelize(model, mesh if ep else P.Mesh(dp=mesh.dp))

    def hf():
        model = ExaoneMoeForCausalLM.from_pretrained(folder, dtype=torch.float32).train()
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh.dp)
        return fully_shard(model, mesh=mesh.dp)

    models = {"kexa-fsdp2": kexa(False), "kexa-fsdp2-ep": kexa(True), "hf-fsdp2": hf()}
    impl = getattr(models["hf-fsdp2"].config, "_experts_implementation", None)
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    g = torch.Generator().manual_seed(D.rank())

    def step(name: str) -> None:
        model = models[name]
        ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=g)
        x, y = ids[:, :-1], ids[:, 1:]
        if name.startswith("kexa"):
            loss, _ = model.loss(model(x), y)
        else:
            loss = model(input_ids=x, labels=x).loss  # HF shifts the labels itself
        loss.backward()
        P.clip_grad_norm_(list(model.parameters()), 1.0)
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            for i in range(args.chunk + 2):
                D.barrier()
                t0 = time.perf_counter()
                step(name)
                D.barrier()
                if i >= 2:
                    times[name].append(time.perf_counter() - t0)
    tokens = args.batch * args.seq * D.world_size()  # global tokens per step
    medians = {name: tokens / statistics.median(ts) for name, ts in times.items()}
    if D.is_main():
        print(f"{args.preset}, {D.world_size()} gloo ranks x 1 thread, global batch {D.world_size()} x {args.batch} x {args.seq}, "
              f"fp32, AdamW; HF experts_implementation={impl!r}; {args.rounds} rounds x {args.chunk} timed steps")
        for name, tps in medians.items():
            print(f"  {name:<14} {tps:8.0f} tok/s   median step {statistics.median(times[name]):.3f}s")
        ratios = {f"{name}/hf-fsdp2": tps / medians["hf-fsdp2"] for name, tps in medians.items() if name != "hf-fsdp2"}
        for name, r in ratios.items():
            print(f"  {name:<26} {r:.2f}x")
        if args.out:
            Path(args.out).write_text(json.dumps({"tok_per_s": medians, "ratios": ratios, "hf_experts_implementation": impl,
                                                  "args": vars(args), "world": D.world_size()}, indent=1))
    P.cleanup()


if __name__ == "__main__":
    main()
