"""CIDEr-D, vectorised: document frequencies from a fixed reference corpus, any batch of candidates.

The score is pycocoevalcap's ``CiderScorer`` (the one behind ``Cider``, which is CIDEr-D: clipped
n-gram weights and a Gaussian length penalty, sigma 6, times 10), including its conventions:
n-grams up to 4 over whitespace tokens, ``idf = log(N) - log(max(1, df))`` with N the number of
reference sets (videos) in the corpus, and a "length" that counts bigrams. The difference is that
the corpus is fixed once (SCST needs the document frequencies of all training references, not
of the batch) and that every candidate-reference pair is scored with sparse matrix operations
instead of Python dictionaries. Inputs must be tokenised the same way on both sides (vcap passes
text-processor-cleaned references and decoded word-tokenizer captions).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import scipy.sparse as sp

N_MAX = 4
SIGMA = 6.0


def ngram_counts(text: str, n: int = N_MAX) -> list[Counter]:
    """Counts of the k-grams (tuples of words) of ``text``, one Counter per k = 1..n."""
    words = text.split()
    return [Counter(zip(*(words[i:] for i in range(k)))) for k in range(1, n + 1)]


BASE = 36_000  # word ids below BASE - 1 pack an n-gram of up to 4 words into one int64 (36000**4 * 5 < 2**63)


def _ngram_codes(ids: np.ndarray, rows: np.ndarray, n: int):
    """(text, n-gram code, size - 1) of every n-gram occurrence; a code packs the word ids and the size."""
    out_rows, out_codes, out_sizes = [], [], []
    code = ids + 1
    for k in range(n):
        if k:  # n-grams of size k + 1 start at i when words i..i+k belong to the same text
            code = code[:-1] * BASE + (ids[k:] + 1)
            same = rows[k:] == rows[:-k]
            start = rows[:-k]
        else:
            same, start = np.ones(len(ids), bool), rows
        out_rows.append(start[same])
        out_codes.append(code[same] * (n + 1) + k)
        out_sizes.append(np.full(int(same.sum()), k))
    return np.concatenate(out_rows), np.concatenate(out_codes), np.concatenate(out_sizes)


def _distinct(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first of each distinct key tuple, how many times it occurs), sorted by the keys."""
    order = np.lexsort(keys[::-1])
    diff = np.zeros(len(order), bool)
    diff[0:1] = True
    for key in keys:
        k = key[order]
        diff[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(diff)
    return order[starts], np.diff(np.append(starts, len(order)))


class CiderD:
    """``CiderD(refs)`` then ``score(candidates, ids)``: one CIDEr-D value per candidate.

    N-grams are counted with NumPy over packed integer codes (word ids from the corpus); a batch
    whose words do not fit the packing falls back to counting tuples in Python (same result).
    """

    def __init__(self, refs: dict, n: int = N_MAX, sigma: float = SIGMA):
        if not refs:
            raise ValueError("CiderD needs a non-empty reference corpus")
        self.n, self.sigma = n, sigma
        self.ids = list(refs)
        self.row_of_id = {vid: i for i, vid in enumerate(self.ids)}
        texts = [r for vid in self.ids for r in refs[vid]]
        self.ref_start = np.cumsum([0] + [len(refs[vid]) for vid in self.ids])  # refs of video v: [start[v], start[v+1])
        video_of_ref = np.repeat(np.arange(len(self.ids)), np.diff(self.ref_start))
        self.words: dict[str, int] = {}
        self.ref_len = np.log(float(len(self.ids)))
        rows, keys, sizes, tfs = self._occurrences(texts, grow=True)
        self.packed = isinstance(keys, np.ndarray)
        # document frequency: in how many reference *sets* (videos) an n-gram appears
        if self.packed:
            first, _ = _distinct(video_of_ref[rows], keys)
            vocab, df = np.unique(keys[first], return_counts=True)
            self.vocab_codes, self.vocab = vocab, None
            self.order = (vocab % (n + 1)).astype(np.int64)
        else:
            df_counter = Counter()
            for v in range(len(self.ids)):
                sel = np.flatnonzero(video_of_ref[rows] == v)
                df_counter.update({keys[i] for i in sel})
            self.vocab = {g: j for j, g in enumerate(df_counter)}
            df = np.fromiter(df_counter.values(), np.int64, len(df_counter))
            self.order = np.fromiter((len(g) - 1 for g in df_counter), np.int64, len(df_counter))
        self.weight = self.ref_len - np.log(np.maximum(1.0, df.astype(np.float64)))
        self.R, self.ref_norm, self.ref_length = self._vectors(len(texts), rows, keys, sizes, tfs)

    def _occurrences(self, texts: list[str], grow: bool = False):
        """Distinct (text, n-gram) pairs: (rows, keys, sizes - 1, term frequencies). Keys are packed
        int64 codes, or tuples of words when the vocabulary is too large to pack. ``grow`` adds new
        words to the corpus vocabulary; otherwise (candidates) they get ids after it for this call only."""
        split = [t.split() for t in texts]
        flat = [w for ws in split for w in ws]
        known = self.words
        if grow:
            ids = np.fromiter((known.setdefault(w, len(known)) for w in flat), np.int64, len(flat))
            vocab_size = len(known)
        else:
            new: dict[str, int] = {}
            ids = np.fromiter((known[w] if w in known else len(known) + new.setdefault(w, len(new)) for w in flat),
                              np.int64, len(flat))
            vocab_size = len(known) + len(new)
        rows = np.repeat(np.arange(len(texts)), [len(ws) for ws in split])
        if vocab_size < BASE - 1:
            rows, codes, sizes = _ngram_codes(ids, rows, self.n)
            first, tf = _distinct(rows, codes)
            return rows[first], codes[first], sizes[first], tf.astype(np.float64)
        out_rows, keys, sizes, tfs = [], [], [], []
        for i, ws in enumerate(split):
            for k, c in enumerate(ngram_counts(" ".join(ws), self.n)):
                out_rows.extend([i] * len(c))
                keys.extend(c.keys())
                sizes.extend([k] * len(c))
                tfs.extend(c.values())
        return np.array(out_rows, np.int64), keys, np.array(sizes, np.int64), np.array(tfs, np.float64)

    def _columns(self, keys) -> np.ndarray:
        """Vocabulary column of each key, -1 for n-grams outside the corpus."""
        if isinstance(keys, np.ndarray):
            if self.vocab is None:
                pos = np.searchsorted(self.vocab_codes, keys)
                pos_c = np.minimum(pos, len(self.vocab_codes) - 1)
                return np.where(self.vocab_codes[pos_c] == keys, pos_c, -1)
            keys = self._unpack(keys)
        elif self.vocab is None:  # a tuple batch against a packed corpus
            self.vocab = {g: j for j, g in enumerate(self._unpack(self.vocab_codes))}
        return np.fromiter(map(self.vocab.get, keys, [-1] * len(keys)), np.int64, len(keys))

    def _unpack(self, codes: np.ndarray) -> list[tuple]:
        names = {i: w for w, i in self.words.items()}
        out = []
        for code in codes.tolist():
            size, code = code % (self.n + 1) + 1, code // (self.n + 1)
            digits = []
            for _ in range(size):
                code, d = divmod(code, BASE)
                digits.append(names[d - 1])
            out.append(tuple(reversed(digits)))
        return out

    def _vectors(self, num_rows: int, rows, keys, sizes, tfs):
        """(tf-idf matrix over the vocabulary, norms (rows, n) including unseen n-grams, bigram counts)."""
        cols = self._columns(keys)
        known = cols >= 0
        # an n-gram outside the corpus has df 0, and log(max(1, 0)) = 0: its weight is log(N)
        w = tfs * np.where(known, self.weight[np.where(known, cols, 0)], self.ref_len)
        norm_sq = np.bincount(rows * self.n + sizes, weights=w * w, minlength=num_rows * self.n)
        length = np.bincount(rows[sizes == 1], weights=tfs[sizes == 1], minlength=num_rows)
        matrix = sp.csr_matrix((w[known], (rows[known], cols[known])), shape=(num_rows, len(self.weight)))
        return matrix, np.sqrt(norm_sq.reshape(num_rows, self.n)), length
    def score(self, candidates: list[str], ids: list) -> np.ndarray:
        """CIDEr-D of ``candidates[i]`` against all references of ``ids[i]``."""
        if len(candidates) != len(ids):
            raise ValueError(f"{len(candidates)} candidates but {len(ids)} ids")
        unknown = [v for v in ids if v not in self.row_of_id]
        if unknown:
            raise KeyError(f"ids without references in the corpus, e.g. {unknown[:3]}")
        if not candidates:
            return np.zeros(0)
        C, c_norm, c_length = self._vectors(len(candidates), *self._occurrences(candidates))
        videos = np.array([self.row_of_id[v] for v in ids])
        starts, ends = self.ref_start[videos], self.ref_start[videos + 1]
        counts = ends - starts
        cand_of_pair = np.repeat(np.arange(len(candidates)), counts)
        ref_of_pair = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        Cp, Rp = C[cand_of_pair], self.R[ref_of_pair]
        clipped = Cp.minimum(Rp).multiply(Rp).tocsr()  # min(hyp, ref) * ref per n-gram
        # sum per (pair, n-gram size)
        per_size = clipped @ sp.csr_matrix((np.ones(len(self.order)), (np.arange(len(self.order)), self.order)),
                                           shape=(len(self.order), self.n))
        val = np.asarray(per_size.todense())
        denom = c_norm[cand_of_pair] * self.ref_norm[ref_of_pair]
        val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
        delta = c_length[cand_of_pair] - self.ref_length[ref_of_pair]
        val *= np.exp(-(delta**2) / (2 * self.sigma**2))[:, None]
        pair_score = val.mean(1)
        total = np.bincount(cand_of_pair, weights=pair_score, minlength=len(candidates))
        return total / counts * 10.0
