"""Routing keys: their limits, RabbitMQ's topic matching, and whether two patterns overlap."""

from __future__ import annotations

from functools import cache, lru_cache

from ._errors import ConfigurationError

__all__ = ["is_pattern", "topic_matches", "topics_overlap", "validate_routing_key"]


def validate_routing_key(key: str, *, what: str) -> None:
    """A routing key is a str of at most 255 bytes (AMQP's shortstr)."""
    if not isinstance(key, str):
        raise ConfigurationError(f"{what}: routing key must be a str, got {type(key).__name__}")
    if len(key.encode()) > 255:
        raise ConfigurationError(f"{what}: routing key {key[:40]!r}... is longer than 255 bytes")


def _words(key: str) -> tuple[str, ...]:
    # RabbitMQ: the empty key has zero words; any other key splits on every '.', empty words kept.
    return tuple(key.split(".")) if key else ()


@lru_cache(maxsize=4096)
def _pattern_words(pattern: str) -> tuple[str, ...]:
    return _words(pattern)


def topic_matches(pattern: str, key: str) -> bool:
    """Whether a topic binding ``pattern`` routes ``key``, by RabbitMQ's rules.

    ``*`` matches exactly one word, ``#`` zero or more; ``a.#`` matches ``a``.
    """
    p = _pattern_words(pattern)
    k = _words(key)
    # reachable[j]: pattern prefix consumed so far can match the first j words of the key.
    reachable = [False] * (len(k) + 1)
    reachable[0] = True
    for word in p:
        if word == "#":
            # '#' extends any reachable prefix by zero or more words.
            for j in range(1, len(k) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(k), 0, -1):
                reachable[j] = reachable[j - 1] and (word == "*" or word == k[j - 1])
            reachable[0] = False
        if not any(reachable):
            return False
    return reachable[len(k)]


# How many words a candidate shared key has so far. A key of exactly one empty word does not
# exist: RabbitMQ reads "" as zero words, so such a witness must not count as an overlap.
_NONE, _ONE_EMPTY, _ONE, _MANY = range(4)


def _grow(state: int, empty_word: bool) -> int:
    if state == _NONE:
        return _ONE_EMPTY if empty_word else _ONE
    return _MANY


def topics_overlap(a: str, b: str) -> bool:
    """Whether some routing key is matched by both topic patterns ``a`` and ``b``."""
    pa, pb = _pattern_words(a), _pattern_words(b)

    def word_of(x: str, y: str) -> bool:
        """Whether the word both tokens match is forced to be empty (a wildcard picks "z")."""
        literal = x if x not in ("*", "#") else y if y not in ("*", "#") else None
        return literal == ""

    @cache
    def overlap(i: int, j: int, state: int) -> bool:
        if i == len(pa) and j == len(pb):
            return state != _ONE_EMPTY
        a_tok = pa[i] if i < len(pa) else None
        b_tok = pb[j] if j < len(pb) else None
        if a_tok == "#":
            if overlap(i + 1, j, state):  # '#' matches nothing more
                return True
            if b_tok == "#":
                if overlap(i, j + 1, state):  # both '#' cover the same words
                    return True
                # both '#' take one more word, of any spelling, to leave a lone empty word
                if state != _MANY and overlap(i, j, _grow(state, empty_word=False)):
                    return True
            elif b_tok is not None and overlap(i, j + 1, _grow(state, word_of(a_tok, b_tok))):
                return True  # '#' swallows the word b's token matches
        if b_tok == "#":
            if overlap(i, j + 1, state):
                return True
            if a_tok not in (None, "#") and overlap(i + 1, j, _grow(state, word_of(a_tok, b_tok))):
                return True
        if a_tok not in (None, "#") and b_tok not in (None, "#"):
            assert a_tok is not None
            assert b_tok is not None
            if a_tok == b_tok or "*" in (a_tok, b_tok):
                return overlap(i + 1, j + 1, _grow(state, word_of(a_tok, b_tok)))
        return False

    return overlap(0, 0, _NONE)


def is_pattern(key: str) -> bool:
    return any(word in ("*", "#") for word in _words(key))
