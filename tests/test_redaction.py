"""The one redaction function: no password survives any URL or DSN form, in text, repr or JSON."""

from __future__ import annotations

import ast
import json
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gptexp.redaction import MASK, passwords_of, redact, redact_data

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
HOSTS = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}\Z") | st.just("127.0.0.1") | st.just("[::1]")
SCHEMES = st.sampled_from(["postgresql", "postgresql+psycopg", "postgres", "mysql+pymysql", "redis", "https"])
# Passwords as users write them: any printable character, including @ : / ? # & = ' " \ % and non-ASCII.
PASSWORDS = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=24)
NO_SPACE_PASSWORDS = PASSWORDS.filter(lambda pw: not any(c.isspace() for c in pw))


def userinfo_url(scheme: str, user: str, password: str, host: str, port: int | None, db: str, query: str) -> str:
    """scheme://user:password@host[:port]/db[?query] with the password written raw (as people do)."""
    return f"{scheme}://{user}:{password}@{host}{f':{port}' if port else ''}/{db}{query}"


def libpq_quote(password: str) -> str:
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


FORMS = {
    # form name -> (render(password) -> text with the password in it, the password's slot as written)
    "userinfo": lambda pw, u, h, d: userinfo_url("postgresql+psycopg", u, pw, h, 5432, d, "?sslmode=require"),
    "query": lambda pw, u, h, d: f"postgresql://{u}@{h}/{d}?sslmode=require&password={quote(pw, safe='')}&application_name=x",
    "sslpassword": lambda pw, u, h, d: f"postgresql://{u}@{h}/{d}?sslpassword={quote(pw, safe='')}",
    "dsn": lambda pw, u, h, d: f"host={h} port=5432 user={u} password={libpq_quote(pw)} dbname={d}",
}


def masked(form: str, u: str, h: str, d: str) -> str:
    """What the text must become: the same form with the password's slot replaced by ***."""
    text = FORMS[form]("\0", u, h, d)
    slot = {"userinfo": "\0", "query": quote("\0", safe=""), "sslpassword": quote("\0", safe=""), "dsn": "'\0'"}[form]
    return text.replace(slot, "'***'" if form == "dsn" else MASK)


@settings(max_examples=300, deadline=None)
@given(form=st.sampled_from(sorted(FORMS)), password=PASSWORDS, user=NAMES, host=HOSTS, db=NAMES,
       wrap=st.sampled_from(["plain", "message", "repr", "json"]))
def test_no_password_survives_any_form(form: str, password: str, user: str, host: str, db: str, wrap: str) -> None:
    if form == "userinfo":
        assume(not any(c.isspace() for c in password))  # a raw space is not valid inside a URL
    text = FORMS[form](password, user, host, db)
    expected = masked(form, user, host, db)
    wrappers = {
        "plain": lambda t: t,
        "message": lambda t: f"storage {t}: OperationalError: connection refused",
        "repr": lambda t: repr({"storage": t}),
        "json": lambda t: json.dumps({"storage": t, "n": 1}),
    }
    if wrap in ("repr", "json") and form == "dsn":
        # A DSN inside a repr/JSON string carries its own escapes: no exact oracle, but no leak.
        out = redact(wrappers[wrap](text))
        assert password not in out or password in wrappers[wrap](expected)
        return
    out = redact(wrappers[wrap](text))
    if wrap == "repr":  # repr picks its quotes by content: compare what the text says, not its quoting
        assert ast.literal_eval(out) == {"storage": expected}
    elif wrap == "json":
        assert json.loads(out) == {"storage": expected, "n": 1}
    else:
        assert out == wrappers[wrap](expected)


@settings(max_examples=200, deadline=None)
@given(password=PASSWORDS.filter(lambda pw: len(pw) >= 3), user=NAMES, host=HOSTS, db=NAMES)
def test_a_known_url_hides_its_password_anywhere(password: str, user: str, host: str, db: str) -> None:
    """A driver may quote the password without its URL; the sweep passes its URL as `known`."""
    assume(set(password) != {"*"})  # *** is what redaction writes
    url = f"postgresql://{user}:{quote(password, safe='')}@{host}/{db}"
    assert passwords_of(url) == {quote(password, safe="")}
    message = f"FATAL: password {password!r} rejected; encoded {quote(password, safe='')}; raw {password}"
    out = redact(message, known=[url])
    assert password not in out and quote(password, safe="") not in out


@settings(max_examples=200, deadline=None)
@given(password=NO_SPACE_PASSWORDS, key=st.sampled_from(["PGPASSWORD", "password", "api_key", "AWS_SESSION_TOKEN", "client_secret"]))
def test_key_value_assignments(password: str, key: str) -> None:
    assume(password[0] not in "'\"")
    assert redact(f"{key}={password} gptexp sweep s.yaml") == f"{key}={MASK} gptexp sweep s.yaml"


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg://gptexp:a:b/c@d@127.0.0.1:5432/db: refused", "postgresql+psycopg://gptexp:***@127.0.0.1:5432/db: refused"),
    ("postgresql://u@h/db?password=se%40cret&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
    ("host=h user=u password='p w\\' x' dbname=d", "host=h user=u password='***' dbname=d"),
    ("host=h password=abc dbname=d", "host=h password=*** dbname=d"),
    ('{"password": "x y", "a": 1}', '{"password": "***", "a": 1}'),
    ("mysql://root:@h/db", "mysql://root:***@h/db"),
])
def test_issue_forms(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "sqlite:///runs/optuna.db", "journal:///shared/study.log", "postgresql://u@h:5432/db?sslmode=require",
    "step 10 max_new_tokens=5 pad_token=<pad> tokens/s=1234", "user@example.com wrote: x:y",
])
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_redact_data_reaches_every_string() -> None:
    data = {"storage": "postgresql://u:hunter22@h/db", "trials": [{"error": "x postgresql://u:hunter22@h/db y", "value": 1.5}],
            "n": 3, "none": None}
    out = redact_data(data, known=["postgresql://u:hunter22@h/db"])
    assert "hunter22" not in json.dumps(out)
    assert out["n"] == 3 and out["none"] is None and out["trials"][0]["value"] == 1.5
