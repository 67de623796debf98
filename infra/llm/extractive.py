"""An offline answerer: the passages' sentences most relevant to the question, quoted and cited.

No model, no network: it scores each sentence of the retrieved passages by the
question's terms (the same tokenizer, stemmer and stop words as the BM25
search leg), weighted by how rare each term is among the passages, and quotes
the best few, each followed by its citation number. A sentence scoring less
than half the best one is not quoted: a weak match from another document is
noise beside a strong one. A long sentence (a table flattened to text has no
full stops) is quoted around its first match, not from its start. The answer
says plainly that it is extractive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator

from infra.llm.base import Completion, CompletionRequest, Passage, Usage

LABEL = "Extractive answer (quoted from your documents; no language model was used):"
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_MIN_SENTENCE_CHARS = 12


class ExtractiveProvider:
    def __init__(
        self,
        name: str,
        terms_of: Callable[[str], frozenset[int]],
        *,
        max_sentences: int = 3,
        max_sentence_chars: int = 400,
        min_relative_score: float = 0.5,
    ) -> None:
        self.name = name
        self._terms = terms_of
        self._max_sentences = max_sentences
        self._max_chars = max_sentence_chars
        self._min_relative = min_relative_score

    def complete(self, request: CompletionRequest) -> Completion:
        text = self._answer(request)
        words_in = sum(len(p.text.split()) for p in request.passages) + len(
            request.question.split()
        )
        return Completion(
            text=text,
            usage=Usage(input_tokens=words_in, output_tokens=len(text.split())),
            provider=self.name,
            model="extractive",
        )

    def stream(self, request: CompletionRequest) -> Iterator[str | Completion]:
        completion = self.complete(request)
        yield from re.findall(r"\S+\s*", completion.text)
        yield completion

    def _answer(self, request: CompletionRequest) -> str:
        question = self._terms(request.question)
        scored: list[tuple[float, int, int, str, int]] = []
        sentences_per_passage = [(p, self._sentences(p)) for p in request.passages]
        # Inverse "passage frequency" of each question term: rare terms weigh more.
        frequency: dict[int, int] = {}
        for _, sentences in sentences_per_passage:
            seen = set().union(*(self._terms(s) for s in sentences)) if sentences else set()
            for term in seen & question:
                frequency[term] = frequency.get(term, 0) + 1
        total = max(1, len(request.passages))
        for rank, (passage, sentences) in enumerate(sentences_per_passage):
            for position, sentence in enumerate(sentences):
                overlap = self._terms(sentence) & question
                if not overlap:
                    continue
                score = sum(math.log(1 + total / frequency[t]) for t in overlap)
                scored.append((score - 0.01 * rank, -rank, -position, sentence, passage.n))
        if not scored:
            return f"{LABEL}\nNone of the retrieved passages mentions what the question asks about."
        ranked = sorted(scored, reverse=True)
        floor = ranked[0][0] * self._min_relative
        best = [s for s in ranked if s[0] >= floor][: self._max_sentences]
        quotes = [
            f"\u201c{self._excerpt(sentence, question)}\u201d [{n}]" for *_, sentence, n in best
        ]
        return LABEL + "\n" + "\n".join(quotes)

    def _sentences(self, passage: Passage) -> list[str]:
        flat = " ".join(passage.text.split())
        sentences = [s.strip() for s in _SENTENCE.split(flat)]
        return [s for s in sentences if len(s) >= _MIN_SENTENCE_CHARS]

    def _excerpt(self, sentence: str, question: frozenset[int]) -> str:
        """The sentence, or for a long one a window that starts a little before its first match."""
        if len(sentence) <= self._max_chars:
            return sentence
        words = sentence.split(" ")
        first = next((i for i, w in enumerate(words) if self._terms(w) & question), 0)
        start = max(0, first - 3)
        rest = " ".join(words[start:])
        excerpt = rest[: self._max_chars].rstrip()
        return (
            ("\u2026" if start else "") + excerpt + ("\u2026" if len(rest) > len(excerpt) else "")
        )
