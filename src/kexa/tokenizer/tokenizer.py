"""`Tokenizer`: kexa's thin wrapper over a Hugging Face `tokenizers.Tokenizer`.

Encoding and decoding are done by `tokenizers` itself, so a saved kexa tokenizer and any HF
consumer agree token for token. The wrapper adds the K-EXAONE special-token ids, the chat template
(`kexa.tokenizer.chat`), loading/saving the HF folder layout, and efficiency statistics.

Text is NFC-normalised before encoding (a normaliser inside tokenizer.json), so `decode(encode(s))`
returns `unicodedata.normalize("NFC", s)`; that is `s` itself for NFC input. Strings such as
`<|endofturn|>` in the text are encoded as their special token (HF's default, and what the chat
template relies on); pass `allow_special=False` to encode them as plain text.

    tok = Tokenizer.from_pretrained("runs/tok")          # or any HF tokenizer.json folder
    ids = tok.encode("안녕하세요, world")
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from . import specials as S

META_FILE = "kexa_tokenizer.json"


class Tokenizer:
    def __init__(self, hf: HFTokenizer, config: dict[str, Any] | None = None, meta: dict | None = None):
        self.hf = hf
        self.config = dict(config or {})
        self.meta = dict(meta or {})
        from .chat import CHAT_TEMPLATE

        self.chat_template: str = self.config.get("chat_template") or CHAT_TEMPLATE

        def pick(key: str, default: str) -> int | None:
            value = self.config.get(key, default)
            if isinstance(value, dict):  # {"content": …} form
                value = value.get("content")
            return hf.token_to_id(value) if isinstance(value, str) else None

        self.pad_id = pick("pad_token", S.PAD)
        self.bos_id = pick("bos_token", S.BOS)
        self.eos_id = pick("eos_token", S.END_OF_TURN)

    # ---- loading / saving -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a folder with tokenizer.json (+ tokenizer_config.json), or a tokenizer.json file."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        file = folder / "tokenizer.json" if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"no tokenizer.json at {file}")
        config: dict = {}
        if (folder / "tokenizer_config.json").exists():
            config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
        if "chat_template" not in config and (folder / "chat_template.jinja").exists():
            config["chat_template"] = (folder / "chat_template.jinja").read_text("utf-8")
        meta = json.loads((folder / META_FILE).read_text("utf-8")) if (folder / META_FILE).exists() else {}
        return cls(HFTokenizer.from_file(str(file)), config, meta)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(path / "tokenizer.json"))
        names = {k: self.hf.id_to_token(i) for k, i in
                 (("bos_token", self.bos_id), ("eos_token", self.eos_id), ("pad_token", self.pad_id)) if i is not None}
        config = {
            **{k: v for k, v in self.config.items() if k not in ("added_tokens_decoder",)},
            "tokenizer_class": "PreTrainedTokenizerFast",
            **names,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.config.get("model_max_length", 262144),
            "chat_template": self.chat_template,
        }
        (path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", "utf-8")
        (path / "special_tokens_map.json").write_text(json.dumps(names, ensure_ascii=False, indent=2) + "\n", "utf-8")
        if self.meta:
            (path / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n", "utf-8")
        return path

    # ---- encoding ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Token ids of `text`; no BOS/EOS is added (K-EXAONE prepends none)."""
        if allow_special:
            return self.hf.encode(text, add_special_tokens=False).ids
        self.hf.encode_special_tokens = True  # a flag of the shared HF object: not thread-safe
        try:
            return self.hf.encode(text, add_special_tokens=False).ids
        finally:
            self.hf.encode_special_tokens = False

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once (parallel inside `tokenizers`)."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.hf.id_to_token(i)

    def special_id(self, token: str) -> int:
        """Id of a special token by string; KeyError if this vocabulary lacks it."""
        i = self.hf.token_to_id(token)
        if i is None:
            raise KeyError(f"token {token!r} is not in this vocabulary")
        return i

    # ---- chat -------------------------------------------------------------------------------
    def apply_chat_template(self, messages, tools=None, enable_thinking: bool = True,
                            add_generation_prompt: bool = False, tokenize: bool = False):
        from .chat import render

        text = render(messages, tools, enable_thinking, add_generation_prompt, self.chat_template)
        return self.encode(text) if tokenize else text

    def encode_chat(self, messages, tools=None, enable_thinking: bool = True,
                    add_generation_prompt: bool = False, split_at_spans: bool = True):
        from .chat import encode_chat

        return encode_chat(self, messages, tools, enable_thinking, add_generation_prompt, split_at_spans)

    # ---- statistics -------------------------------------------------------------------------
    def stats(self, texts: Iterable[str]) -> dict[str, float]:
        """Compression of `texts`: UTF-8 bytes (after NFC) per token and tokens per whitespace word."""
        n_bytes = n_tokens = n_words = 0
        batch: list[str] = []

        def flush():
            nonlocal n_tokens
            n_tokens += sum(len(ids) for ids in self.encode_batch(batch))
            batch.clear()

        for text in texts:
            n_bytes += len(unicodedata.normalize("NFC", text).encode("utf-8"))
            n_words += len(text.split())
            batch.append(text)
            if len(batch) >= 256:
                flush()
        flush()
        return {
            "bytes": n_bytes, "tokens": n_tokens, "words": n_words,
            "bytes_per_token": n_bytes / max(n_tokens, 1),
            "tokens_per_word": n_tokens / max(n_words, 1),
        }

    def __repr__(self) -> str:
        algo = self.meta.get("algorithm", "pretrained")
        return f"Tokenizer(vocab_size={self.vocab_size}, algorithm={algo!r}, eos_id={self.eos_id})"
