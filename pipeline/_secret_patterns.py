"""What a secret looks like, for `pipeline._redaction`: the words that make a key secret, and the
shapes of secrets inside free text (credentials in URLs, bearer tokens, known token formats, card
numbers that pass Luhn), with the functions that mask a match."""
from __future__ import annotations

import re

MASK = "[redacted]"

# A key is secret when one of its words is one of these ...
SECRET_WORDS = frozenset((
    "password", "passwd", "pwd", "pass", "passphrase", "passcode", "secret", "secrets", "token",
    "authorization", "auth", "credential", "credentials", "creds", "dsn", "jwt", "pin", "session",
    "cookie", "cookies", "cvv", "cvc", "cvv2", "otp", "apikey", "privatekey", "cardnumber", "bearer",
    "sessionid", "csrftoken", "xsrf", "csrf",
))
# ... or these words follow each other in it ...
SECRET_PHRASES = frozenset((
    ("api", "key"), ("private", "key"), ("card", "number"), ("credit", "card"), ("access", "key"),
    ("signing", "key"), ("encryption", "key"),
))
# ... or one of its words ends with one of these (single-word compounds: `accesstoken`, `pgpassword`).
SECRET_SUFFIXES = ("password", "passwd", "token", "secret", "apikey", "privatekey", "sessionid", "cardnumber")
# A key of several words whose last word is one of these describes a secret without holding one
# (`token_count`, `token_type`, `auth_url`): its value is not masked whole, but still checked.
DESCRIPTIVE_LAST_WORDS = frozenset((
    "count", "type", "types", "length", "len", "expires", "expiry", "ttl", "timeout", "enabled",
    "required", "url", "uri", "endpoint", "policy", "validators", "method", "scheme", "mode", "status",
    "provider", "backend", "backends", "model", "kind", "name", "header", "field", "fields", "at",
))

WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
SCHEMES = r"(?:bearer|basic|token|digest|negotiate|bot|jwt|apikey|ntlm|hoba|mutual|vapid|scram-sha-256|aws4-hmac-sha256)"
# `key=value`, `key: value`, `"key": "value"`, `?key=value&…`: the key and its separator are
# matched, and only under a secret key (`is_secret_key`) is the value read — so a pair under an
# ordinary key (`ValueError: password=x`, `Not Found: /x?token=y`) does not swallow the pairs in
# its value, and text made of many pairs costs linear time.
PAIR_RE = re.compile(r"""(?<![\w.-])(?P<q>["']?)(?P<key>[A-Za-z_][\w.-]*)(?P=q)\s*[:=]\s*""")
VALUE_RE = re.compile(
    r"""(?P<scheme>""" + SCHEMES + r"""\s+)?(?P<value>"[^"]*"|'[^']*'|[^\s,;&}\])'"]+)""", re.IGNORECASE)
# Bounded repeats throughout: a crafted string (`a.a.a.a…://`) must not cost quadratic time.
USERINFO_RE = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s/?#@:'\"]{0,256}:)(?P<password>[^\s/?#@'\"]{1,1024})@")
BEARER_RE = re.compile(r"\b(?P<scheme>[Bb]earer|BEARER)(?P<space>\s+)[A-Za-z0-9._~+/-]{8,}=*")
TOKEN_SHAPES_RE = re.compile(
    r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"        # a JWT (header.payload.signature)
    r"|\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{10,}"                        # Stripe-style keys
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"          # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"                                        # Slack tokens
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"                                         # AWS access key ids
)
# A card number stands alone (not inside an id: hex trace ids and UUIDs hold digit runs), written
# whole or in the groups cards print: 4-4-4-4(-3), or Amex's 4-6-5.
CARD_RE = re.compile(
    r"(?<![\w.])(?:[2-6]\d{12,18}"
    r"|[2-6]\d{3}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,7}"
    r"|3[47]\d{2}(?P<amex>[ -])\d{6}(?P=amex)\d{5})"
    r"(?!\w|\.\d)"
)


def luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if position % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """13 to 19 digits, led by a card network's first digit (2 to 6: Mastercard, Visa, Amex,
    Discover, JCB, UnionPay, Maestro), passing Luhn. Millisecond timestamps start with 1."""
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn(digits)


def mask_card(match: re.Match) -> str:
    text = match.group(0)
    return MASK if is_card_number(text.replace(" ", "").replace("-", "")) else text


def mask_bearer(match: re.Match) -> str:
    return match.group("scheme") + match.group("space") + MASK


def mask_userinfo(match: re.Match) -> str:
    return match.group("head") + MASK + "@"
