"""kexa.data: the multilingual corpus (built offline on the machine).

    from kexa.data import build_corpus
    info = build_corpus()                 # cache/corpus; info.files("train"), info.paths["ko"]["heldout"]
"""

from .corpus import DOMAINS, CorpusInfo, build_corpus, default_cache_dir

__all__ = ["DOMAINS", "CorpusInfo", "build_corpus", "default_cache_dir"]
