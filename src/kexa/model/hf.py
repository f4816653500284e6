"""Import/export of Hugging Face `exaone_moe` checkpoints (config.json + safetensors).

kexa's parameter names are HF's in-memory names (`ExaoneMoeForCausalLM.state_dict()`) plus the
official `mtp.*` tensors. On disk two generations exist (reference §3, §11), both read here:

    official release / what transformers 5 writes        kexa (= HF in memory)
    ...mlp.experts.{e}.gate_proj.weight  (I, C)   -> ...mlp.experts.gate_up_proj[e, :I]   (E, 2I, C)
    ...mlp.experts.{e}.up_proj.weight    (I, C)   -> ...mlp.experts.gate_up_proj[e, I:]
    ...mlp.experts.{e}.down_proj.weight  (C, I)   -> ...mlp.experts.down_proj[e]          (E, C, I)
    ...mlp.e_score_correction_bias       (E,)     -> ...mlp.gate.e_score_correction_bias
    fused 3-D tensors (transformers >= 5.3 style) -> the same names, unchanged

`CHECKPOINT_KEY_TABLE` is the one table of these rules; `to_kexa_key` and `to_checkpoint_keys`
apply it in the two directions. Loading builds the model on the meta device, checks every tensor's
presence and shape first (a `CheckpointError` lists all missing / unexpected / mis-shaped ones),
then streams tensors one at a time from the memory-mapped files into the model's storage: no
second full copy. Saving writes the official per-expert layout by default (what transformers 5
itself writes), each file atomically (temp file, fsync, rename), sharded with an index when large.

    python -c "from kexa import KExaone, ModelConfig; KExaone(ModelConfig.preset('tiny')).save_pretrained('/tmp/t')"
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import ConfigError, ModelConfig

CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ARCHITECTURES = ("ExaoneMoeForCausalLM", "ExaoneMoEForCausalLM")
# written to config.json, the engines' spelling first: vLLM's registry and SGLang's MTP draft remap
# (architectures[0] == "ExaoneMoEForCausalLM" -> ExaoneMoEForCausalLMMTP) key on it, and without it
# SGLang serves silently without MTP; transformers' spelling second (its auto classes go by model_type)
SERVING_ARCHITECTURES = ["ExaoneMoEForCausalLM", "ExaoneMoeForCausalLM"]

# (checkpoint-name regex, kexa-name template, part): part None = whole tensor; otherwise the
# per-expert piece that lands in a slice of the fused kexa tensor.
CHECKPOINT_KEY_TABLE = [
    (re.compile(r"^(model\.layers\.\d+\.mlp)\.e_score_correction_bias$"), r"\1.gate.e_score_correction_bias", None),
    (re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.gate_proj\.weight$"), r"\1.gate_up_proj", "gate"),
    (re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.up_proj\.weight$"), r"\1.gate_up_proj", "up"),
    (re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.down_proj\.weight$"), r"\1.down_proj", "down"),
]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(ValueError):
    """A folder that is not a loadable exaone_moe checkpoint, with every problem listed."""


def to_kexa_key(name: str) -> tuple[str, int | None, str | None]:
    """Checkpoint tensor name -> (kexa name, expert index or None, part or None)."""
    for pattern, template, part in CHECKPOINT_KEY_TABLE:
        m = pattern.match(name)
        if m:
            return m.expand(template), (int(m.group(2)) if part else None), part
    return name, None, None


def to_checkpoint_keys(name: str, tensor: torch.Tensor, per_expert: bool) -> list[tuple[str, torch.Tensor]]:
    """kexa tensor -> the checkpoint tensors that hold it (the inverse of `to_kexa_key`)."""
    if name.endswith(".gate.e_score_correction_bias") and per_expert:
        return [(name.replace(".gate.e_score_correction_bias", ".e_score_correction_bias"), tensor)]
    if per_expert and name.endswith(".experts.gate_up_proj"):
        prefix, inter = name[: -len(".gate_up_proj")], tensor.shape[1] // 2
        return [item for e in range(tensor.shape[0]) for item in (
            (f"{prefix}.{e}.gate_proj.weight", tensor[e, :inter]), (f"{prefix}.{e}.up_proj.weight", tensor[e, inter:]))]
    if per_expert and name.endswith(".experts.down_proj"):
        prefix = name[: -len(".down_proj")]
        return [(f"{prefix}.{e}.down_proj.weight", tensor[e]) for e in range(tensor.shape[0])]
    return [(name, tensor)]


# ---------------------------------------------------------------------- reading
def read_config(path: Path) -> tuple[ModelConfig, dict]:
    cfg_path = path / CONFIG_NAME
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory (expected a model folder with config.json + safetensors)")
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is not a kexa/HF model folder: {CONFIG_NAME} is missing")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e
    archs = raw.get("architectures") or []
    if archs and not set(archs) & set(ARCHITECTURES):
        raise CheckpointError(f"{cfg_path}: architectures {archs} is not one of {list(ARCHITECTURES)}")
    try:
        return ModelConfig.from_hf(raw), raw
    except ConfigError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from e


def checkpoint_files(path: Path) -> list[Path]:
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from e
        files = sorted({path / f for f in weight_map.values()})
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(f"{index} names shard(s) that are missing: {absent}")
        return files
    if (path / SINGLE_FILE).is_file():
        return [path / SINGLE_FILE]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path} holds no safetensors weights ({SINGLE_FILE} or {INDEX_FILE})")
    return files


def scan(files: list[Path]) -> dict[str, tuple[Path, list[int]]]:
    """Checkpoint key -> (file, shape), read from headers only."""
    found: dict[str, tuple[Path, list[int]]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    found[k] = (f, list(h.get_slice(k).get_shape()))
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise CheckpointError(f"cannot read {f}: {e}") from e
    return found


def expected_piece_shape(full: torch.Size, part: str | None) -> list[int]:
    if part in ("gate", "up"):
        return [full[1] // 2, full[2]]
    if part == "down":
        return [full[1], full[2]]
    return list(full)


def check_folder(cls, path: Path, stacklevel: int = 3):
    """Read config.json and every safetensors header and match them against the model `cls` builds
    (on the meta device, so it costs nothing at any size). Returns (config, raw config dict, found:
    checkpoint key -> (file, shape), plan: kexa name -> [(checkpoint key, expert, part)], the meta
    model); raises a CheckpointError listing every missing / unexpected / mis-shaped tensor."""
    config, raw = read_config(path)
    found = scan(checkpoint_files(path))
    if config.has_mtp and not any(k.startswith("mtp.") for k in found):
        warnings.warn(f"{path}: config declares an MTP block but the checkpoint has no mtp.* tensors "
                      "(transformers drops them on save); loading without MTP — speculative decoding "
                      "and the MTP loss are unavailable for this model", stacklevel=stacklevel)
        config = config.replace(num_nextn_predict_layers=0)
    with torch.device("meta"):
        model = cls(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)

    plan: dict[str, list[tuple[str, int | None, str | None]]] = {}  # kexa name -> pieces
    unexpected, misshaped, misshaped_names = [], [], set()
    for key, (_, shape) in found.items():
        name, expert, part = to_kexa_key(key)
        if name not in expected:
            if not (config.tie_word_embeddings and name == "lm_head.weight"):
                unexpected.append(key)
            continue
        want = expected_piece_shape(expected[name], part)
        if expert is not None and not 0 <= expert < expected[name][0]:
            unexpected.append(key)
        elif shape != want:
            misshaped.append(f"{key}: checkpoint {shape} vs model {want}")
            misshaped_names.add(name)
        else:
            plan.setdefault(name, []).append((key, expert, part))
    missing = []
    for name, shape in expected.items():
        pieces = plan.get(name, [])
        if name in misshaped_names:
            continue
        if name.endswith("experts.gate_up_proj"):
            have = {(e, p) for _, e, p in pieces}
            whole = any(e is None for _, e, _ in pieces)
            lacking = [f"{name}[expert {e}].{p}" for e in range(shape[0]) for p in ("gate", "up") if (e, p) not in have]
            if not whole and lacking:
                missing += lacking
        elif name.endswith("experts.down_proj"):
            have = {e for _, e, _ in pieces}
            if None not in have:
                missing += [f"{name}[expert {e}]" for e in range(shape[0]) if e not in have]
        elif not pieces:
            missing.append(name)
    if missing or unexpected or misshaped:
        def listing(title, items):
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else "")
        msg = f"{path} does not match its config.json ({config.num_hidden_layers} layers, {config.num_experts} experts):"
        for title, items in (("missing", missing), ("unexpected", sorted(unexpected)), ("wrong shape", misshaped)):
            if items:
                msg += listing(title, items)
        raise CheckpointError(msg)
    return config, raw, found, plan, model


def load_pretrained(cls, path, dtype: torch.dtype | None = None, device="cpu"):
    path = Path(path)
    config, raw, found, plan, model = check_folder(cls, path, stacklevel=4)
    if dtype is None:
        dtype = DTYPES.get(raw.get("dtype") or raw.get("torch_dtype"), torch.float32)
    model.to(dtype)  # on meta: free; the router stays fp32 (see moe.Router._apply)
    model.to_empty(device=device)
    params = model.state_dict(keep_vars=True)
    by_file: dict[Path, list[tuple[str, str, int | None, str | None]]] = {}
    for name, pieces in plan.items():
        for key, expert, part in pieces:
            by_file.setdefault(found[key][0], []).append((name, key, expert, part))
    with torch.no_grad():
        for f, items in by_file.items():
            with safe_open(str(f), framework="pt", device="cpu") as h:
                for name, key, expert, part in items:  # one tensor in memory at a time
                    target = params[name]
                    src = h.get_tensor(key)
                    if part is not None:  # one expert's piece of a fused (E, 2I, C) / (E, C, I) stack
                        inter = target.shape[1] // 2
                        target = {"gate": target[expert, :inter], "up": target[expert, inter:],
                                  "down": target[expert]}[part]
                    target.copy_(src)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


# ---------------------------------------------------------------------- writing
def hf_config_dict(config: ModelConfig, dtype: torch.dtype) -> dict:
    """config.json as released checkpoints write it, for transformers, vLLM and SGLang alike."""
    hf = config.to_hf()
    hf["architectures"] = list(SERVING_ARCHITECTURES)
    # top-level rope_theta beside rope_parameters: SGLang reads it (transformers 5 drops it from the
    # configs it saves, and a missing one makes SGLang fall back to its default theta)
    hf["rope_theta"] = config.rope_theta
    # "dtype" is transformers 5's key, "torch_dtype" the one older readers (engines) still look up
    hf["dtype"] = hf["torch_dtype"] = str(dtype).removeprefix("torch.")
    return hf


def atomic_write(path: Path, write) -> None:
    """write(tmp_path) then fsync and rename over `path`; a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_pretrained(model, path, max_shard_bytes: int = 5 * 2**30, per_expert: bool = True) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config: ModelConfig = model.config
    state = model.state_dict()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    tensors = [item for name, t in state.items() for item in to_checkpoint_keys(name, t.detach(), per_expert)]

    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    size = 0
    for name, t in tensors:
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, t))
        size += nbytes
    names = [SINGLE_FILE] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for fname, shard in zip(names, shards):
        # clone(): safetensors refuses views that share storage (the per-expert slices do)
        data = {k: v.contiguous().clone() if per_expert else v.contiguous() for k, v in shard}
        atomic_write(path / fname, lambda tmp, data=data: save_file(data, str(tmp), metadata={"format": "pt"}))
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for _, t in tensors)},
                 "weight_map": {k: fname for fname, shard in zip(names, shards) for k, _ in shard}}
        atomic_write(path / INDEX_FILE, lambda tmp: tmp.write_text(json.dumps(index, indent=2)))
    elif (path / INDEX_FILE).exists():
        (path / INDEX_FILE).unlink()
    for stale in path.glob("model*.safetensors"):  # shards of an earlier, differently-sharded save
        if stale.name not in names:
            stale.unlink()
    dtype = next((t.dtype for n, t in state.items() if t.is_floating_point() and "mlp.gate." not in n), torch.float32)
    hf = hf_config_dict(config, dtype)
    atomic_write(path / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(hf, indent=2)))
    fsync_dir(path)
