"""`kexa export`: a training checkpoint as a servable Hugging Face folder, streamed shard by shard.

    kexa export --checkpoint runs/nano --out exports/nano                    # latest valid checkpoint, bf16
    kexa export --checkpoint runs/nano/checkpoints/step_00001000 --out exports/nano-1k --dtype float32
    kexa export --checkpoint runs/nano/model --out exports/nano --max-shard-gb 5

--checkpoint takes a run folder (its newest valid checkpoint), one checkpoint folder (its manifest
is verified first; a sharded torchrun checkpoint is read from its torch.distributed.checkpoint files,
tensor by tensor, in one process) or a model folder. The output is what released K-EXAONE checkpoints look like,
so transformers, vLLM and SGLang serve it (docs/serving.md):
    config.json               both architecture spellings, the engines' `ExaoneMoEForCausalLM` first;
                              top-level rope_theta beside rope_parameters; dtype and torch_dtype
    generation_config.json    the report's sampling defaults: temperature 1.0, top_p 0.95, and
                              <|endofturn|> as EOS
    model*.safetensors        per-expert layout (`experts.{e}.gate_proj.weight`, router bias at
                              `mlp.e_score_correction_bias`), cast to --dtype; router weight and
                              bias stay fp32 (HF `_keep_in_fp32_modules_strict`); MTP as `mtp.*`
    tokenizer files           copied from the source when present
--layout fused writes kexa's in-memory 3-D expert stacks instead (transformers >= 5.3 reads them) and
warns: vLLM and SGLang load only per-expert names and skip unknown ones silently, so a served fused
folder would run with uninitialised experts and router bias.

Streaming: the source headers are checked against the model first (nothing is written for a broken
or truncated source); then one source tensor at a time is converted and appended to the current
output shard, which is written when it reaches --max-shard-gb. Peak memory is one output shard plus
one source tensor (plus, for --layout fused, one layer's expert stack being assembled), at any model
size. The folder is built beside --out and renamed into place when complete.

Exit status: 0 done; 1 for an unusable source or an existing --out; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..model.hf import (CONFIG_NAME, DTYPES, INDEX_FILE, SINGLE_FILE, CheckpointError, check_folder, fsync_dir,
                        hf_config_dict, read_config, to_checkpoint_keys, to_kexa_key)
from ..model.transformer import KExaone
from ..tokenizer.specials import END_OF_TURN, KNOWN
from . import checkpoint as ckpt

GENERATION_CONFIG = "generation_config.json"
SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.95}  # the report's defaults for K-EXAONE
FUSED_WARNING = ("exporting the fused expert layout: vLLM and SGLang load per-expert names only and skip "
                 "unknown names silently, so served from this folder the routed experts and the router "
                 "bias would be uninitialised; use --layout per-expert (the default) for serving")


class ExportError(ValueError):
    """A source or destination `kexa export` cannot use, with the reason."""


def model_folder(source: str | Path) -> Path:
    """The model folder (or, for a sharded checkpoint, the checkpoint folder) behind a run folder,
    a checkpoint folder or a model folder."""
    source = Path(source)
    if (source / ckpt.MANIFEST).exists() or source.name.startswith("step_"):
        problem = ckpt.verify(source)
        if problem:
            raise ExportError(f"checkpoint {source} is {problem}")
        return source if ckpt.is_sharded(source) else source / ckpt.MODEL
    if ckpt.checkpoint_dir(source).is_dir():
        latest = ckpt.latest_checkpoint(source)
        if latest is None:
            raise ExportError(f"{source} holds no valid checkpoint in {ckpt.checkpoint_dir(source)}")
        return latest if ckpt.is_sharded(latest) else latest / ckpt.MODEL
    if (source / CONFIG_NAME).is_file():
        return source
    raise ExportError(f"{source} is not a run folder, a checkpoint folder or a model folder (no checkpoints/, "
                      f"{ckpt.MANIFEST} or {CONFIG_NAME})")


def is_router(name: str) -> bool:
    return ".mlp.gate." in name or name.endswith("e_score_correction_bias")


class ShardWriter:
    """Appends tensors to the current shard and writes it once it would exceed max_bytes."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.shard: dict[str, torch.Tensor] = {}
        self.size, self.parts, self.weight_map, self.total = 0, [], {}, 0

    def add(self, name: str, t: torch.Tensor) -> None:
        nbytes = t.numel() * t.element_size()
        if self.shard and self.size + nbytes > self.max_bytes:
            self.flush()
        self.shard[name] = t
        self.size += nbytes
        self.total += nbytes

    def flush(self) -> None:
        if not self.shard:
            return
        part = self.folder / f".part-{len(self.parts):05d}.safetensors"
        save_file(self.shard, str(part), metadata={"format": "pt"})
        self.parts.append((part, list(self.shard)))
        self.shard, self.size = {}, 0

    def finish(self) -> int:
        """Name the shards (model.safetensors, or model-i-of-n + index); returns the shard count."""
        self.flush()
        n = len(self.parts)
        names = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for (part, keys), name in zip(self.parts, names):
            os.replace(part, self.folder / name)
            self.weight_map |= dict.fromkeys(keys, name)
        if n > 1:
            index = {"metadata": {"total_size": self.total}, "weight_map": self.weight_map}
            (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2))
        return n


def stream_tensors(found: dict, plan: dict):
    """(checkpoint key, tensor) for every tensor the model uses, one at a time, file by file."""
    by_file: dict[Path, list[str]] = {}
    for pieces in plan.values():
        for key, _, _ in pieces:
            by_file.setdefault(found[key][0], []).append(key)
    for f, keys in by_file.items():
        with safe_open(str(f), framework="pt", device="cpu") as h:
            for key in keys:
                yield key, h.get_tensor(key)


def sharded_source(folder: Path):
    """(config, folder of config/tokenizer files, tensor stream) of a sharded training checkpoint:
    its torch.distributed.checkpoint metadata is checked against the model first, then every tensor
    is read alone (DCP reads just the pieces of the rank files that hold it)."""
    from torch.distributed.checkpoint import FileSystemReader, load

    hf_dir = folder / ckpt.CONFIG
    try:
        config, _ = read_config(hf_dir)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    shards = folder / ckpt.SHARDS
    metadata = FileSystemReader(str(shards)).read_metadata().state_dict_metadata
    stored = {k.removeprefix("model."): m for k, m in metadata.items() if k.startswith("model.")}
    with torch.device("meta"):
        model = KExaone(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(stored))
    wrong = [f"{k}: checkpoint {list(stored[k].size)} vs model {list(v)}" for k, v in expected.items()
             if k in stored and stored[k].size != v]
    if missing or wrong:
        raise ExportError(f"{shards} does not match {hf_dir / CONFIG_NAME}: missing {missing[:10]}, "
                          f"wrong shape {wrong[:10]}")

    def tensors():
        for name in expected:
            t = torch.empty(stored[name].size, dtype=stored[name].properties.dtype)
            with warnings.catch_warnings():  # DCP notes it runs without a process group: that is the intent
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                load({"model": {name: t}}, storage_reader=FileSystemReader(str(shards)), no_dist=True)
            yield name, t

    return config, hf_dir, model, tensors()


def export(checkpoint: str | Path, out: str | Path, dtype: str = "bfloat16", layout: str = "per-expert",
           max_shard_bytes: int = 5 * 2**30) -> dict:
    """Write the servable folder `out` from `checkpoint` (see the module docstring); returns a summary."""
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if layout not in ("per-expert", "fused"):
        raise ExportError(f"--layout must be 'per-expert' or 'fused', got {layout!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not empty: choose a new --out (nothing is overwritten)")
    source = model_folder(checkpoint)
    if ckpt.is_sharded(source):
        config, files_dir, model, stream = sharded_source(source)
    else:
        try:
            config, raw, found, plan, model = check_folder(KExaone, source)
        except CheckpointError as e:
            raise ExportError(str(e)) from e
        files_dir, stream = source, stream_tensors(found, plan)
    target = DTYPES[dtype]
    if layout == "fused":
        warnings.warn(FUSED_WARNING, stacklevel=2)
    shapes = {k: v.shape for k, v in model.state_dict().items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        writer = ShardWriter(tmp, max_shard_bytes)

        def emit(name: str, t: torch.Tensor) -> None:
            cast = t.is_floating_point() and not is_router(name)
            # copy=True: a per-expert slice must not share storage with its stack (safetensors refuses)
            writer.add(name, t.to(dtype=target if cast else t.dtype, copy=True).contiguous())

        stacks: dict[str, list] = {}  # fused layout: kexa name -> [stack being filled, pieces still missing]
        for key, t in stream:
            name, expert, part = to_kexa_key(key)
            if layout == "per-expert":
                if expert is not None:  # already one expert's piece: the served name
                    emit(key, t)
                else:  # a fused stack or a kexa-named router bias: split / rename
                    for k, piece in to_checkpoint_keys(name, t, per_expert=True):
                        emit(k, piece)
            elif expert is None:
                emit(name, t)
            else:
                E, inter = shapes[name][0], shapes[name][1] // 2
                pieces = 2 * E if part != "down" else E  # gate + up per expert, or down
                stack = stacks.setdefault(name, [torch.empty(shapes[name], dtype=t.dtype), pieces])
                slot = {"gate": stack[0][expert, :inter], "up": stack[0][expert, inter:], "down": stack[0][expert]}
                slot[part].copy_(t)
                stack[1] -= 1
                if stack[1] == 0:
                    emit(name, stacks.pop(name)[0])
        shards = writer.finish()

        hf = hf_config_dict(config, target)
        (tmp / CONFIG_NAME).write_text(json.dumps(hf, indent=2))
        eos = end_of_turn_id(files_dir)
        generation = {"bos_token_id": config.bos_token_id, "eos_token_id": eos, "pad_token_id": config.pad_token_id,
                      **SAMPLING}
        (tmp / GENERATION_CONFIG).write_text(json.dumps(generation, indent=2))
        copied = []
        for f in sorted(files_dir.iterdir()):  # tokenizer files, chat template
            if f.is_file() and not f.name.endswith(".safetensors") and f.name not in (CONFIG_NAME, INDEX_FILE,
                                                                                          GENERATION_CONFIG):
                shutil.copy2(f, tmp / f.name)
                copied.append(f.name)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"source": str(source), "out": str(out), "dtype": dtype, "layout": layout, "shards": shards,
            "bytes": writer.total, "mtp": config.has_mtp, "eos_token_id": eos, "copied": copied}


def end_of_turn_id(folder: Path) -> int:
    """<|endofturn|>'s id: from the folder's tokenizer.json when there is one, else kexa's fixed table."""
    fixed = next(i for i, (text, _) in KNOWN.items() if text == END_OF_TURN)
    if not (folder / "tokenizer.json").is_file():
        return fixed
    from tokenizers import Tokenizer
    found = Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id(END_OF_TURN)
    if found is None:
        raise ExportError(f"{folder / 'tokenizer.json'} has no {END_OF_TURN} token: not a kexa/K-EXAONE tokenizer")
    return found


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kexa export", description="Export a training checkpoint as a servable HF "
                                "folder (config.json for vLLM/SGLang/transformers, generation_config.json, "
                                "per-expert safetensors), streamed shard by shard.")
    p.add_argument("--checkpoint", required=True, help="run folder (newest valid checkpoint), checkpoint folder "
                                                       "or model folder")
    p.add_argument("--out", required=True, help="new folder to write (must not exist or be empty)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                   help="weight dtype of the export (default bfloat16, what engines serve; router stays fp32)")
    p.add_argument("--layout", default="per-expert", choices=["per-expert", "fused"],
                   help="expert tensor layout (default per-expert: what vLLM/SGLang load; fused warns)")
    p.add_argument("--max-shard-gb", type=float, default=5.0, help="largest output shard in GiB (default 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.max_shard_gb > 0:
        parser().error(f"--max-shard-gb must be > 0, got {args.max_shard_gb}")
    with warnings.catch_warnings(record=True) as caught:  # printed as one clean line each
        warnings.simplefilter("always")
        try:
            summary = export(args.checkpoint, args.out, args.dtype, args.layout, int(args.max_shard_gb * 2**30))
        except ExportError as e:
            summary = e
    for w in caught:
        print(f"kexa export: warning: {w.message}", file=sys.stderr)
    if isinstance(summary, ExportError):
        print(f"kexa export: error: {summary}", file=sys.stderr)
        return 1
    print(f"exported {summary['source']} -> {summary['out']}: {summary['shards']} shard(s), "
          f"{summary['bytes'] / 2**30:.2f} GiB {summary['dtype']}, {summary['layout']} experts, "
          f"MTP {'yes' if summary['mtp'] else 'no'}, eos {summary['eos_token_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
