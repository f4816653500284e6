"""kexa.tokenizer: SuperBPE training, the `Tokenizer` wrapper and the K-EXAONE chat template.

    from kexa.tokenizer import Tokenizer, train_superbpe
    tok = train_superbpe(["corpus.txt"], vocab_size=16384)   # rule="kexaone" for K-EXAONE's regex
    tok.save_pretrained("tok"); Tokenizer.from_pretrained("tok").encode("hello")

CLI: `kexa tokenizer train|stats|encode|decode` (see `kexa.tokenizer.cli`).
"""

from .chat import CHAT_TEMPLATE, ChatEncoding, encode_chat, parse_response, render
from .pretokenize import RULES, BoundaryRule, get_rule
from .specials import NUM_RESERVED, reserved_tokens
from .textfiles import InvalidUTF8Error
from .tokenizer import Tokenizer
from .train import DEFAULT_TRANSITION, train_bpe, train_superbpe

__all__ = [
    "CHAT_TEMPLATE", "ChatEncoding", "encode_chat", "parse_response", "render",
    "RULES", "BoundaryRule", "get_rule", "NUM_RESERVED", "reserved_tokens", "InvalidUTF8Error",
    "Tokenizer", "DEFAULT_TRANSITION", "train_bpe", "train_superbpe",
]
