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

import numpy as np
import scipy.sparse as sp

N_MAX = 4
SIGMA = 6.0
# an n-gram's key is (the code of its first n-1 words) * BASE + (the id of its last word), in int64: up to 2**31
# distinct words, and up to 2**32 distinct n-grams of one size in a corpus and a batch together
BASE = 1 << 31


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

    N-grams are numbered with NumPy one size at a time: an n-gram's key is its prefix's number and its last
    word, and the numbers are dense, the corpus's n-grams first (their vocabulary columns), so a vocabulary of
    any size is counted the same way.
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
        self.keys: list[np.ndarray] = []  # per n-gram size, the corpus's sorted keys: an n-gram's number is its place
        self.ref_len = np.log(float(len(self.ids)))
        rows, sizes, codes, tfs = self._occurrences(texts, grow=True)
        self.offset = np.cumsum([0] + [len(k) for k in self.keys])  # the vocabulary column of each size's number 0
        size_of_column = np.repeat(np.arange(n), np.diff(self.offset))
        # sums a row of per-n-gram values into one value per n-gram size (the corpus's, so built once)
        self.by_size = sp.csr_matrix((np.ones(len(size_of_column)), (np.arange(len(size_of_column)), size_of_column)),
                                     shape=(len(size_of_column), n))
        cols = self._columns(sizes, codes)
        # document frequency: in how many reference *sets* (videos) an n-gram appears
        first, _ = _distinct(video_of_ref[rows], cols)
        df = np.bincount(cols[first], minlength=self.offset[-1])
        self.weight = self.ref_len - np.log(np.maximum(1.0, df.astype(np.float64)))
        self.R, self.ref_norm, self.ref_length = self._vectors(len(texts), rows, sizes, cols, tfs)

    def _occurrences(self, texts: list[str], grow: bool = False):
        """Distinct (text, n-gram) pairs: (rows, sizes - 1, the n-grams' numbers, term frequencies). ``grow`` (the
        corpus) numbers its words and n-grams for good; candidates' new ones are numbered after the corpus's, for
        this call only."""
        split = [t.split() for t in texts]
        flat = [w for ws in split for w in ws]
        known, new = self.words, {}
        ids = np.fromiter((known.setdefault(w, len(known)) if grow else known[w] if w in known else
                           len(known) + new.setdefault(w, len(new)) for w in flat), np.int64, len(flat))
        if len(known) + len(new) >= BASE:
            raise ValueError(f"CiderD numbers at most {BASE - 1} distinct words")
        if grow:
            self.keys.append(np.arange(len(known)))  # a word's number is its id
        rows = np.repeat(np.arange(len(texts)), [len(ws) for ws in split])
        out_rows, out_sizes, out_codes = [rows], [np.zeros(len(ids), np.int64)], [ids]
        code = ids
        for k in range(1, self.n):  # n-grams of size k + 1: words i..i+k, within one text
            same = rows[k:] == rows[:-k]
            key = code[:-1] * BASE + ids[k:]
            code = np.zeros(len(key), np.int64)  # texts are in order: a window across two has no extension
            code[same] = self._number(key[same], k, grow)
            out_rows.append(rows[k:][same])
            out_sizes.append(np.full(int(same.sum()), k))
            out_codes.append(code[same])
        rows, sizes, codes = np.concatenate(out_rows), np.concatenate(out_sizes), np.concatenate(out_codes)
        first, tf = _distinct(rows, sizes, codes)
        return rows[first], sizes[first], codes[first], tf.astype(np.float64)

    def _number(self, keys: np.ndarray, k: int, grow: bool) -> np.ndarray:
        """Dense numbers of the size-(k + 1) n-grams with ``keys``: the corpus's are their places in its sorted
        keys, the others' come after them."""
        if grow:
            corpus, numbers = np.unique(keys, return_inverse=True)
            self.keys.append(corpus)
            return numbers
        corpus = self.keys[k]
        place = np.minimum(np.searchsorted(corpus, keys), max(len(corpus) - 1, 0))
        found = corpus[place] == keys if len(corpus) else np.zeros(len(keys), bool)
        numbers = place.copy()
        numbers[~found] = len(corpus) + np.unique(keys[~found], return_inverse=True)[1]
        return numbers

    def _columns(self, sizes: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Vocabulary column of each n-gram, -1 for n-grams outside the corpus."""
        return np.where(codes < np.diff(self.offset)[sizes], self.offset[sizes] + codes, -1)

    def _vectors(self, num_rows: int, rows, sizes, cols, tfs):
        """(tf-idf matrix over the vocabulary, norms (rows, n) including unseen n-grams, bigram counts)."""
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
        rows, sizes, codes, tfs = self._occurrences(candidates)
        C, c_norm, c_length = self._vectors(len(candidates), rows, sizes, self._columns(sizes, codes), tfs)
        videos = np.array([self.row_of_id[v] for v in ids])
        starts, ends = self.ref_start[videos], self.ref_start[videos + 1]
        counts = ends - starts
        cand_of_pair = np.repeat(np.arange(len(candidates)), counts)
        ref_of_pair = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        Cp, Rp = C[cand_of_pair], self.R[ref_of_pair]
        clipped = Cp.minimum(Rp).multiply(Rp).tocsr()  # min(hyp, ref) * ref per n-gram
        # sum per (pair, n-gram size)
        val = np.asarray((clipped @ self.by_size).todense())
        denom = c_norm[cand_of_pair] * self.ref_norm[ref_of_pair]
        val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
        delta = c_length[cand_of_pair] - self.ref_length[ref_of_pair]
        val *= np.exp(-(delta**2) / (2 * self.sigma**2))[:, None]
        pair_score = val.mean(1)
        total = np.bincount(cand_of_pair, weights=pair_score, minlength=len(candidates))
        return total / counts * 10.0
