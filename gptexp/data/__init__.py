"""The data pipeline: corpus → splits → tokenizer (cached) → memory-mapped token files → windows.

The launcher prepares the data once, before torchrun starts (gptexp.data.prepare): it streams the
corpus (gptexp.data.corpus) in pieces cut at safe boundaries (gptexp.data.pieces), trains or reuses
the tokenizer and encodes the splits with a pool of processes into a verified cache entry
(gptexp.data.tokens). Workers memory-map that entry and gather only the windows they train on
(gptexp.data.windows), so their memory does not grow with the corpus.
"""

from gptexp.data.corpus import CorpusError, check_corpus
from gptexp.data.prepare import needs_word_starts, prepare_data
from gptexp.data.tokens import CacheError, PreparedData, TokenSplit, byte_table, load_splits
from gptexp.data.windows import sample_windows, step_seed

__all__ = ["CacheError", "CorpusError", "PreparedData", "TokenSplit", "byte_table", "check_corpus", "load_splits",
           "needs_word_starts", "prepare_data", "sample_windows", "step_seed"]
