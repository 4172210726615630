"""Secrets never leave the process: one implementation of "what is a secret" for everything we
write or show — log lines (the structlog processor that runs last, on the final values, tracebacks
included), stored stage errors, and the event payloads the API and the dashboard return.

Three kinds of evidence, each checked where it can be:

- **keys**: a value under a key whose *words* name a secret (`password`, `db_pass`, `apiKey`,
  `X-Api-Key`, `private_key`, `auth`, `credentials`, `dsn`, `jwt`, `pin`, `session`, …) is masked
  whole. Keys are split into words (on `_`, `-`, `.`, camelCase, digits), so `bypass`, `passage`
  and `tokenizer` are not secrets; a key that only *describes* a secret (`token_count`,
  `token_type`, `auth_url`) keeps its value, which is still checked as below.
- **text**: inside any string, `key=value`, `key: value` and `"key": "value"` pairs under such a
  key (query strings too: `?token=…`), the credential of `Authorization: Bearer …`, the password
  in a URL's userinfo (`amqp://guest:[redacted]@host`), well-known token shapes (JWTs, `sk_live_…`,
  `ghp_…`, AWS access key ids) and card numbers (13 to 19 digits with a card network's leading
  digit and a valid Luhn check, so millisecond timestamps and ids stay).
- **depth**: any depth is walked; beyond `MAX_DEPTH` levels the whole rest is replaced by a
  marker (never passed through unread), and a container that contains itself becomes a marker.

Cost matters: the log processor is on the engine's hot path. Key verdicts are cached per key
name; a short string already found clean is remembered (ids, stage and pipeline names repeat on
every line), so an ordinary transition line costs a few dict lookups.
"""
from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime, time
from enum import Enum
from typing import Any, Iterable

from ._secret_patterns import (
    BEARER_RE,
    CARD_RE,
    DESCRIPTIVE_LAST_WORDS,
    MASK,
    PAIR_RE,
    SECRET_PHRASES,
    SECRET_SUFFIXES,
    SECRET_WORDS,
    TOKEN_SHAPES_RE,
    USERINFO_RE,
    VALUE_RE,
    WORD_RE,
    is_card_number,
    mask_bearer,
    mask_card,
    mask_userinfo,
)

__all__ = ["MASK", "MAX_DEPTH", "Redactor", "redactor", "redact", "redact_text", "is_secret_key", "add_secret_keys"]

MAX_DEPTH = 200  # containers deeper than this are replaced whole (orjson itself stops at 255)
TOO_DEEP = f"[redacted: nested deeper than {MAX_DEPTH} levels]"
CIRCULAR = "[redacted: circular reference]"

_PLAIN = (float, bool, type(None))
_KEPT = (datetime, date, time, uuid.UUID)  # rendered by orjson (or str()) as they are: no secret inside
_CLEAN_CACHE_MAX = 4096
_CLEAN_TEXT_MAX = 160  # strings up to this long are remembered once found clean
_KEY_CACHE_MAX = 4096
_KEY_TEXT_MAX = 100  # keys up to this long are remembered


class Redactor:
    """The redaction rules with their caches. `redactor` is the process's one instance; the log
    processor is its `__call__` (structlog's processor signature)."""

    __slots__ = ("_words", "_phrases", "_key_cache", "_clean")

    def __init__(self, extra_keys: Iterable[str] = ()) -> None:
        self._words: frozenset[str] = SECRET_WORDS
        self._phrases: frozenset[tuple[str, ...]] = SECRET_PHRASES
        self._key_cache: dict[Any, bool] = {}
        self._clean: set[str] = set()
        self.add_secret_keys(extra_keys)

    # --- keys ----------------------------------------------------------------------------------
    def add_secret_keys(self, keys: Iterable[str]) -> None:
        """More key names (matched as whole words, like the built-in ones): `ssn`, `tax_id`."""
        words, phrases = set(self._words), set(self._phrases)
        for key in keys:
            parts = tuple(w.lower() for w in WORD_RE.findall(str(key)))
            if len(parts) == 1:
                words.add(parts[0])
            elif parts:
                phrases.add(parts)
        self._words, self._phrases = frozenset(words), frozenset(phrases)
        self._key_cache = {}
        self._clean = set()

    def is_secret_key(self, key: Any) -> bool:
        """Whether a value under this key is a secret, whatever it looks like."""
        verdict = self._key_cache.get(key)
        if verdict is None:
            verdict = isinstance(key, str) and self._judge_key(key)
            if not isinstance(key, str) or len(key) <= _KEY_TEXT_MAX:  # a payload's made-up long keys: not kept
                if len(self._key_cache) >= _KEY_CACHE_MAX:  # keys made up at run time: stay bounded
                    self._key_cache = {}
                self._key_cache[key] = verdict
        return verdict

    def _judge_key(self, key: str) -> bool:
        words = [w.lower() for w in WORD_RE.findall(key)]
        if not words:
            return False
        secret_at = -1
        for i, word in enumerate(words):
            if word in self._words or word.endswith(SECRET_SUFFIXES):
                secret_at = i
        for phrase in self._phrases:
            size = len(phrase)
            for i in range(len(words) - size + 1):
                if tuple(words[i:i + size]) == phrase:
                    secret_at = max(secret_at, i + size - 1)
        if secret_at < 0:
            return False
        # `token_count`, `auth_url`: the secret word is followed by a word that only describes it.
        return not (secret_at < len(words) - 1 and words[-1] in DESCRIPTIVE_LAST_WORDS)

    # --- text ----------------------------------------------------------------------------------
    def _mask_pairs(self, text: str) -> str:
        pieces: list[str] = []
        done = 0
        for match in PAIR_RE.finditer(text):
            if match.start() < done or not self.is_secret_key(match.group("key")):
                continue
            value = VALUE_RE.match(text, match.end())
            if value is None:
                continue
            start, end = value.span("value")
            pieces.append(text[done:start])
            pieces.append(text[start] + MASK + text[start] if text[start] in "\"'" else MASK)
            done = end
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)

    def redact_text(self, text: str) -> str:
        """Masks the secrets inside free text (messages, tracebacks, URLs, request lines)."""
        if "://" in text:
            text = USERINFO_RE.sub(mask_userinfo, text)
        if ":" in text or "=" in text:
            text = self._mask_pairs(text)
        if "earer" in text or "EARER" in text:
            text = BEARER_RE.sub(mask_bearer, text)
        if len(text) >= 13:
            if ("eyJ" in text or "_live_" in text or "_test_" in text or "gh" in text or "github_pat_" in text
                    or "xox" in text or "AKIA" in text or "ASIA" in text):  # what TOKEN_SHAPES_RE's shapes start with: cheaper than it
                text = TOKEN_SHAPES_RE.sub(MASK, text)
            text = CARD_RE.sub(mask_card, text)
        return text

    def _text(self, text: str) -> str:
        """`redact_text`, remembering short strings found clean (ids and names repeat per line)."""
        clean = self._clean
        if text in clean:
            return text
        redacted = self.redact_text(text)
        if redacted == text and len(text) <= _CLEAN_TEXT_MAX:
            if len(clean) >= _CLEAN_CACHE_MAX:
                clean.clear()
            clean.add(text)
        return redacted

    # --- values --------------------------------------------------------------------------------
    def redact(self, value: Any) -> Any:
        """A copy of `value` with every secret masked, at any depth (containers are copied, the
        caller's objects are left alone)."""
        return self._value(value, 0, set())

    def _value(self, value: Any, depth: int, path: set[int]) -> Any:
        kind = type(value)
        if kind is str:
            return self._text(value)
        if kind is int:
            return MASK if value >= 1_000_000_000_000 and is_card_number(str(value)) else value
        if kind in _PLAIN:
            return value
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            if depth >= MAX_DEPTH:
                return TOO_DEEP
            if id(value) in path:
                return CIRCULAR
            path.add(id(value))
            try:  # plain loops, not comprehensions: one stack frame per level of nesting
                if isinstance(value, dict):
                    is_secret = self.is_secret_key
                    copy: dict = {}
                    for k, v in value.items():
                        copy[k] = MASK if is_secret(k) else self._value(v, depth + 1, path)
                    return copy
                items: list = []
                for v in value:
                    items.append(self._value(v, depth + 1, path))
                return items
            finally:
                path.discard(id(value))
        if isinstance(value, str):  # a str subclass (SafeString, …)
            return self._text(str(value))
        if isinstance(value, int):  # an int subclass (IntEnum, …)
            return self._value(int(value), depth, path)
        if isinstance(value, _KEPT):
            return value
        if isinstance(value, Enum):
            return self._value(value.value, depth, path)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._value(dataclasses.asdict(value), depth, path)
        # Anything else (exceptions, requests, paths, bytes, …) as the text it would render as.
        try:
            text = str(value)
        except Exception:
            text = object.__repr__(value)
        return self.redact_text(text)

    def __call__(self, _logger: Any, _name: str, event_dict: dict) -> dict:
        """The log processor: runs last before rendering, on the values that will be written."""
        keys = self._key_cache
        clean = self._clean
        for key, value in event_dict.items():
            secret = keys.get(key)
            if secret is None:
                secret = self.is_secret_key(key)
            if secret:
                event_dict[key] = MASK
                continue
            kind = type(value)
            if kind is str:
                if value not in clean and key != "timestamp":  # the timestamp is our own clock's text
                    event_dict[key] = self._text(value)
            elif kind is int:
                if value >= 1_000_000_000_000 and is_card_number(str(value)):
                    event_dict[key] = MASK
            elif kind not in _PLAIN:
                event_dict[key] = self._value(value, 1, set())
        return event_dict

redactor = Redactor()
redact = redactor.redact
redact_text = redactor.redact_text
is_secret_key = redactor.is_secret_key
add_secret_keys = redactor.add_secret_keys
