"""A secret never survives the redactor in any form: case-changed, percent-encoded (once, partly, twice),
inside JSON or a URL, or cut in two by a truncation that ran before masking."""
from __future__ import annotations

import json
import logging
import sys
from urllib.parse import unquote

from server.providers import openai_compat
from server.redact import RedactingFilter, Redactor, mask
from server.upstream import failures as F

GEMINI = "AIzaSyD3xQm9Lk2Pw7Rt5Vb8Nc1Hj4Gf6Ds0aZe"                   # AIza + 35
AQ = "AQ.Ab8RN6LmZ0qT-xY_3kPw9sVd2Hf7Jc4Gb1Nn5Qe8Rt0Uy6Io2Pa4Sd"    # Google's new AI Studio shape
OTHER = "sk-proj-Zx81Lq0Pw9Mn3Vb6Cd2Ef5Gh7Jk4"                     # a registered upstream key of another shape
PASSWORD = "correct horse battery staple"                           # a registered password with spaces


def _pct(text: str, every: int = 1, lower_hex: bool = False) -> str:
    """Percent-encode every `every`-th character (1: all of them)."""
    out = []
    for i, ch in enumerate(text):
        if i % every == 0:
            out.append("".join(f"%{b:02x}" if lower_hex else f"%{b:02X}" for b in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


def _mixed(text: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(text))


def forms(secret: str) -> dict[str, str]:
    """Every spelling of a secret a log line, an error or a URL might carry."""
    return {
        "exact": secret, "lower": secret.lower(), "upper": secret.upper(), "mixed": _mixed(secret),
        "pct": _pct(secret), "pct lower hex": _pct(secret, lower_hex=True), "pct lower": _pct(secret.lower()),
        "pct partly": _pct(secret, every=3), "pct prefix": _pct(secret[:4]) + secret[4:],
        "pct upper partly": _pct(secret.upper(), every=2),
        "double": _pct(secret).replace("%", "%25"), "double prefix": _pct(secret[:1]).replace("%", "%25") + secret[1:],
        "double partly": _pct(secret, every=2).replace("%", "%25"),
        "plus": secret.replace(" ", "+"),
    }


def contexts(form: str) -> dict[str, str]:
    return {
        "bare": form,
        "json": json.dumps({"error": {"code": 400, "message": f"API key not valid: {form}"}}),
        "url": f"GET https://generativelanguage.googleapis.com/v1beta/models?key={form}&alt=sse HTTP/1.1",
        "parens": f"(key {form}).", "quoted": f"'{form}',", "colon": f"Consumer 'api_key:{form}' suspended",
        "brackets": f"[{form}]", "angle": f"<{form}>", "bearer": f"Authorization: Bearer {form};",
        "prefixed": f"x{form}y",
    }


def leaks(text: str, secret: str) -> list[str]:
    """What of `secret` is readable in `text`: the whole secret (exact, lower, upper, percent-encoded) or any
    12 characters of its tail after the 4-character prefix, looked for in every percent-decoded view of the
    text, ignoring case and `+`-for-space."""
    views = [text]
    for _ in range(4):
        views.append(unquote(views[-1]))
    views = [v.lower() for v in views] + [v.lower().replace("+", " ") for v in views]
    found = [f for f in (secret, secret.lower(), secret.upper(), _pct(secret)) if f in text]
    tail = secret[4:].lower()
    frags = {tail[i:i + 12] for i in range(len(tail) - 11)}
    found += sorted({f for f in frags for v in views if f in v})
    return found


def _check_every_form(redact: Redactor, secret: str) -> None:
    failures = []
    for fname, form in forms(secret).items():
        for cname, text in contexts(form).items():
            out = redact(text)
            if leaks(out, secret):
                failures.append(f"{fname}/{cname}: {out!r}")
    assert not failures, "\n".join(failures)


def test_gemini_key_is_hidden_in_every_form():
    _check_every_form(Redactor([GEMINI, OTHER]), GEMINI)
    _check_every_form(Redactor(), GEMINI)  # a key that is not ours, quoted by Google


def test_aq_key_is_hidden_in_every_form_and_masked_like_a_key():
    _check_every_form(Redactor([AQ]), AQ)
    _check_every_form(Redactor(), AQ)
    assert mask(AQ) == "AQ.A…" + AQ[-4:]
    assert Redactor()(f"key {AQ} refused") == f"key {mask(AQ)} refused"
    iq = "IQ." + AQ[3:]  # reported prefix variant
    assert leaks(Redactor()(f"key={iq.lower()}"), iq) == []


def test_registered_secret_of_another_shape_is_hidden_in_every_form():
    _check_every_form(Redactor([OTHER, PASSWORD]), OTHER)
    _check_every_form(Redactor([OTHER, PASSWORD]), PASSWORD)


ORDINARY = [
    "The aqua. paint dried; Aizawa said the FAQ. was in Iraq. IQ. tests are seq. items.",
    "Aizawa Hiroshi met Aizawa-san at aqua.example.com for the req. review",
    "https://example.com/search?q=aqua.blue&lang=en%20US&path=%2Fdocs%2Ffaq.html",
    '{"name": "Aizawa", "color": "aqua.", "q.": 1, "url": "https://faq.example.org/a?b=c%26d"}',
    "100% of 50%: discount+tax = 7 + 3; a%zz stays",
]


def test_ordinary_text_is_left_alone_while_a_case_changed_key_beside_it_is_masked():
    r = Redactor([OTHER, PASSWORD])
    for text in ORDINARY:
        assert r(text) == text
        for key in (GEMINI.lower(), AQ.upper(), OTHER.upper()):
            assert r(f"{text} {key}") == f"{text} {mask(key)}"


def test_percent_encoded_key_comes_back_decoded_with_the_key_masked():
    out = Redactor()(f"GET /v1beta/models?key={_pct(GEMINI, every=2)}&name=a%20b")
    assert out == f"GET /v1beta/models?key={mask(GEMINI)}&name=a b"
    deep = _pct(GEMINI)
    for _ in range(6):  # deeper than the redactor decodes: the encoded word is dropped, hex digits and all
        deep = deep.replace("%", "%25")
    assert Redactor()(f"key={deep} ok") == "… ok"


def test_log_records_and_exception_text_are_masked_in_every_case():
    record = logging.LogRecord("keyloom", logging.WARNING, __file__, 1, "upstream said %s", (GEMINI.lower(),), None)
    try:
        raise RuntimeError(f"refused {_pct(OTHER)}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    RedactingFilter(Redactor([OTHER])).filter(record)
    assert not leaks(record.getMessage(), GEMINI) and not leaks(record.exc_text or "", OTHER)


def _straddling(key: str, at: int = 185) -> bytes:
    head = ("upstream connect error or disconnect/reset before headers. " * 4)[:at]
    return (head + key + " retried. " + "z" * 40).encode()


def _no_fragment(message: str, key: str) -> bool:
    """No piece of the key beyond what its masked form shows (first 4, last 4)."""
    rest = message.replace(mask(key), "")
    return not any(key[i:i + 5].lower() in rest.lower() for i in range(len(key) - 4))


def test_classify_error_masks_before_it_cuts_a_non_json_body():
    for key in (GEMINI, AQ, GEMINI.lower()):
        body = _straddling(key)
        assert body.index(key.encode()) == 185
        f = F.classify_error(500, body, Redactor([GEMINI, AQ]))
        assert isinstance(f, F.ServerError) and "HTTP 500" in f.message
        assert _no_fragment(f.message, key), f.message
        assert len(f.message) <= len("upstream answered HTTP 500: ") + 201


def test_openai_compat_masks_before_it_cuts_an_error_body():
    r = Redactor([OTHER])
    head = "x" * 290
    for body in ((head + " " + OTHER + " end").encode(), json.dumps({"detail": head + OTHER}).encode()):
        f = openai_compat.classify(502, body, {}, r, "local")
        assert _no_fragment(f.message, OTHER), f.message
