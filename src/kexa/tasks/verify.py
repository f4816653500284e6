"""Answer checkers shared by the task families.

Math answers go through `math-verify` (parse both sides, `verify(gold, pred)`), not string comparison:
"1,234", "1234.0", "\\frac{1}{2}" and "0.5" compare as numbers. math-verify bounds its own work with
SIGALRM, which Python allows only in the main thread; an RL rollout worker or a server thread would
crash on it. Off the main thread its timeouts are therefore switched off (`parsing_timeout=None`,
`timeout_seconds=None`) and the bound is ours: the reply is cut to its last `MAX_CHARS` characters
and the check runs in its own daemon thread, abandoned (scored 0) after `TIMEOUT_S`.
"""

from __future__ import annotations

import re
import threading
import unicodedata

from math_verify import parse, verify

MAX_CHARS = 400  # a final answer is short; longer replies are judged on their tail
TIMEOUT_S = 5.0


def _clean_math(text: str) -> str:
    # math-verify does not read the Unicode minus or the multiplication/division signs
    return text.replace("\u2212", "-").replace("×", "*").replace("÷", "/")[-MAX_CHARS:]


# the last number (or fraction) written in a text: math-verify's expression extractor wants a word
# boundary before a number, which Japanese and Chinese text ("答えは7400です") does not have
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")


def _math_equal_unbounded(gold: str, pred: str, main: bool) -> bool:
    kw_parse = {} if main else {"parsing_timeout": None}
    kw_verify = {} if main else {"timeout_seconds": None}
    g = parse(gold, **kw_parse)
    if not g:
        return False
    pred = _clean_math(pred)
    p = parse(pred, **kw_parse)
    if p and verify(g, p, **kw_verify):
        return True
    if p:  # math-verify read an answer, and it is wrong
        return False
    numbers = _LAST_NUMBER.findall(pred)
    p = parse(numbers[-1], **kw_parse) if numbers else None
    return bool(p) and bool(verify(g, p, **kw_verify))


def math_equal(gold: str, pred: str) -> bool:
    """True if `pred`'s (last) mathematical answer equals `gold`, by math-verify; safe in any thread."""
    if threading.current_thread() is threading.main_thread():
        return _math_equal_unbounded(gold, pred, main=True)
    # one daemon thread per check (~0.1 ms against math-verify's ~5 ms): no queue behind other
    # callers' checks eats into the bound, and a runaway check is abandoned, never joined
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(_math_equal_unbounded(gold, pred, False)),
                              daemon=True, name="kexa-math-verify")
    worker.start()
    worker.join(TIMEOUT_S)
    return bool(result and result[0])


_INT = re.compile(r"(?<![\d.])[-\u2212]?\d+(?![\d.])")


def integers(text: str) -> list[int]:
    """Every integer written in `text`, in order (a Unicode minus counts as a sign)."""
    return [int(s.replace("\u2212", "-")) for s in _INT.findall(text)]


_QUOTES = "\"'`“”‘’«»「」『』„‚"
_QUOTED = re.compile(r"[\"'`“‘«「『„‚]([^\"'`”’»」』“‘]+)[\"'`”’»」』“‘]")


def plain(text: str) -> str:
    """A short answer without decoration: NFC, stripped of surrounding quotes/backticks/bold and a
    final full stop."""
    s = unicodedata.normalize("NFC", text).strip()
    for _ in range(3):
        s = s.strip().strip("*").strip(_QUOTES).strip()
        s = re.sub(r"[.。!！]+$", "", s)
    return s


def final_word(text: str) -> str:
    """The answer a sentence ends on: its last quoted string, else its last word, undecorated
    ('The reversed word is "cba".' -> 'cba'). Like math-verify's last number, the last one counts."""
    quoted = _QUOTED.findall(text)
    if quoted:
        return plain(quoted[-1])
    words = text.split()
    return plain(words[-1]) if words else ""
