"""SSE framing out, and decoding of Gemini's event streams in (every framing the SDKs accept)."""
from __future__ import annotations

import json

import pytest

from server.translate.sse import DONE, KEEPALIVE, SSEDecoder, frame

EVENTS = [{"candidates": [{"content": {"parts": [{"text": f"piece {i} — 中文 ✓"}]}}]} for i in range(3)]


def encoded(sep: bytes) -> bytes:
    return b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + sep for e in EVENTS)


@pytest.mark.parametrize("sep", [b"\r\n\r\n", b"\n\n", b"\r\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100000])
def test_decoder_accepts_all_framings_in_any_chunking(sep, size):
    raw = encoded(sep)
    d = SSEDecoder()
    out = []
    for i in range(0, len(raw), size):
        out += d.feed(raw[i:i + size])
    rest, truncated = d.close()
    # with \r\r framing the last event's end is only certain once the stream closes
    assert [json.loads(p) for p in out + rest] == EVENTS
    assert truncated is False
    expected_rest = [EVENTS[-1]] if sep == b"\r\r" else []
    assert [json.loads(p) for p in rest] == expected_rest


def test_comments_and_other_fields_are_ignored_and_multiline_data_joined():
    d = SSEDecoder()
    out = d.feed(b": ping\r\n\r\nevent: x\r\nid: 1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n")
    assert out == ['{"a":\n1}'] and json.loads(out[0]) == {"a": 1}


def test_data_without_space_and_bare_json_error_lines():
    d = SSEDecoder()
    assert d.feed(b'data:{"x":1}\n\n') == ['{"x":1}']
    out = d.feed(b'{\n  "error": {\n    "code": 500,\n    "message": "boom"\n  }\n}\n\n')
    assert json.loads(out[0])["error"]["code"] == 500


def test_close_reports_a_last_event_without_blank_line_and_truncation():
    d = SSEDecoder()
    d.feed(b'data: {"a": 1}\r\n')
    rest, truncated = d.close()
    assert rest == ['{"a": 1}'] and truncated is True
    d = SSEDecoder()
    d.feed(b'data: {"a": ')
    rest, truncated = d.close()
    assert truncated is True and rest == ['{"a": ']


def test_event_size_limit():
    d = SSEDecoder(max_event_bytes=100)
    with pytest.raises(ValueError):
        d.feed(b"data: " + b"x" * 200)


def test_outgoing_frames_are_single_line_json_and_keepalives_are_comments():
    out = frame({"text": "line1\nline2 </script> 中文"})
    assert out.startswith(b"data: ") and out.endswith(b"\n\n") and out.count(b"\n") == 2
    assert json.loads(out[6:])["text"] == "line1\nline2 </script> 中文"
    assert "中文".encode() in out  # not \u-escaped: fewer bytes on the wire
    assert KEEPALIVE.startswith(b":") and KEEPALIVE.endswith(b"\n\n")
    assert DONE == b"data: [DONE]\n\n"
