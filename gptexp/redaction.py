"""Secrets out of everything gptexp prints or writes: the one redaction function.

A storage URL may carry a password in several forms, and any of them can reach an error message, a
log line or a JSON document (a driver's exception repeats the URL it was given):

    postgresql://user:pw@host/db            userinfo; the password may hold raw `@`, `:` or `/`
    postgresql://user@host/db?password=pw   a secret query parameter (password, sslpassword, token, ...)
    host=h user=u password='p w' dbname=d   a libpq key=value DSN (quoted values with \\' escapes)
    {"password": "pw"}                      a mapping printed as JSON or a Python repr
    PGPASSWORD=pw                           an environment assignment

`redact(text)` replaces each such password with `***`, erring on the side of hiding too much (a
userinfo runs to the LAST `@` of the URL, so a password with a raw `@` is hidden whole). When the
URL itself is known, `redact(text, known=[url])` also hides its password wherever else it appears
(raw, percent-decoded or percent-encoded), for messages that quote the password without its URL.
`redact_data` applies it to every string of a JSON-like value. Nothing else in gptexp spells these
patterns: callers import from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"

# Key names whose values are secrets (case-insensitive; the key must END with one of these words,
# so `sslpassword`, `PGPASSWORD`, `api_key`, `client_secret`, `AWS_SESSION_TOKEN` and
# `X-Amz-Signature` are covered while `max_new_tokens` or `pad_token` are not).
_SECRET_KEY = (r"(?:[\w.\-]*(?:password|passwd|pwd|passphrase|secret|api[_\-]?key|access[_\-]?key|private[_\-]?key"
               r"|signature|credentials?)|(?:[\w\-]*[_\-])?(?:access|auth|refresh|api|bearer|session|oauth|security)"
               r"[_\-]?token|token|pass)")

# scheme://user:password@host — the password runs to the LAST `@` before whitespace (so raw `@`,
# `:`, `/` and quotes inside it are hidden whole; a raw space is not valid in a URL).
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"`<>]*:)(?P<secret>\S*)(?=@[^\s@]*(?:\s|$))")
# ?password=pw&... in a URL: the value ends at `&`, `#` or whitespace; trailing characters that a
# percent-encoded value never holds (`: , ; ) ' "` and closing brackets) belong to the sentence or
# the repr around the URL and stay.
_QUERY_SECRET = re.compile(rf"(?P<head>[?&;](?i:{_SECRET_KEY})=)(?P<secret>[^&#\s]*?)(?=[:,;)'\"\]}}>]*(?:[&#\s]|$))")
# password=pw in a libpq DSN or an environment assignment: a quoted value (libpq's \' escapes), or
# everything up to whitespace.
_KEY_VALUE_SECRET = re.compile(
    rf"(?P<head>(?:^|(?<=[\s,;({{\[\"'`]))(?i:{_SECRET_KEY})\s*=\s*)"
    r"(?P<secret>'(?:\\.|[^'\\])*'?|\"(?:\\.|[^\"\\])*\"?|\S+)")
# "password": "pw" / 'password': 'pw' in JSON or a Python repr.
_MAPPING_SECRET = re.compile(
    rf"(?P<head>(?P<q>['\"])(?i:{_SECRET_KEY})(?P=q)\s*:\s*)"
    r"(?P<secret>'(?:\\.|[^'\\])*'?|\"(?:\\.|[^\"\\])*\"?|[^\s,}\]]+)")


def _mask(match: re.Match[str]) -> str:
    """A URL's password or query value: replaced whole."""
    return f"{match.group('head')}{MASK}"


def _mask_value(match: re.Match[str]) -> str:
    """A DSN or mapping value: its quotes, if it was quoted, stay around the mask."""
    secret = match.group("secret")
    opening = secret[:1] if secret[:1] in ("'", '"') else ""
    closing = opening if opening and len(secret) >= 2 and secret.endswith(opening) else ""
    return f"{match.group('head')}{opening}{MASK}{closing}"


def passwords_of(url: str) -> set[str]:
    """The secret values `url` carries (userinfo password, secret query keys, DSN keys), as written."""
    found: set[str] = set()
    for pattern in (_URL_USERINFO, _QUERY_SECRET, _KEY_VALUE_SECRET, _MAPPING_SECRET):
        for match in pattern.finditer(url):
            secret = match.group("secret")
            if len(secret) >= 2 and secret[0] in "'\"" and secret[-1] == secret[0]:
                secret = secret[1:-1]
            if secret:
                found.add(secret)
    return found


def redact(text: str, known: Iterable[str] = ()) -> str:
    """`text` with every password replaced by `***` (see the module docstring for the forms).

    >>> redact("postgresql://u:p@ss@h/db?sslpassword=x&sslmode=require")
    'postgresql://u:***@h/db?sslpassword=***&sslmode=require'
    """
    text = str(text)
    secrets: set[str] = set()
    for url in known:
        for secret in passwords_of(url):
            secrets |= {secret, unquote(secret), quote(unquote(secret), safe=""), quote(unquote(secret))}
    # Longest first, so a secret that contains another is hidden whole; very short values (one or
    # two characters) would mask unrelated text, and the patterns below already cover their forms.
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, mask in ((_URL_USERINFO, _mask), (_QUERY_SECRET, _mask), (_KEY_VALUE_SECRET, _mask_value),
                          (_MAPPING_SECRET, _mask_value)):
        text = pattern.sub(mask, text)
    return text


def redact_data(value: Any, known: Iterable[str] = ()) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with `redact` applied to every string in it."""
    known = list(known)
    if isinstance(value, str):
        return redact(value, known)
    if isinstance(value, dict):
        return {key: redact_data(item, known) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item, known) for item in value]
    return value
