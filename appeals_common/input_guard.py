"""Hostile input (DESIGN §9: input is bounded - sizes, lengths, nesting, control
characters): the limits every channel applies before and while reading what others send.

* JSON nested deeper than `MAX_JSON_DEPTH` arrays/objects is refused before it is parsed
  (Python's parser recurses once per level: 100,000 `[` would raise RecursionError).
  `parse_json` is the one JSON reader of untrusted bodies: HTTP requests
  (appeals_common/http.py), inbound appeals (intake) and department replies (dispatch).
* Text may not carry characters that are invisible or change how the text around them
  is shown or processed (`hidden_character_error`); every string field of every input
  schema applies it (appeals_common/schemas.py, StrictSchema).
"""

from __future__ import annotations

import json
import re
import unicodedata
from array import array
from itertools import accumulate
from typing import Any

# Deepest nesting of arrays/objects accepted in a JSON body. The suite's own bodies nest
# two levels (e.g. an inbound appeal > attachments > one attachment).
MAX_JSON_DEPTH = 32


class JsonRefused(ValueError):
    """A JSON body refused; str(exc) completes "body ..." / "request body ..."."""


# A JSON string, escapes included; an unterminated one runs to the end of the text (one
# linear pass, no backtracking). Brackets inside strings go with their string.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def json_depth(text: str) -> int:
    """How deep `text` nests arrays and objects, found without parsing or recursion: the
    brackets outside strings, counted up and down (each step in C, not in Python)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    steps = array("b", brackets.encode("ascii").translate(_STEPS))
    return max(accumulate(steps), default=0)


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `text` nests arrays/objects deeper than `limit`."""
    if text.count("[") + text.count("{") <= limit:  # most bodies: two counts and done
        return False
    return json_depth(text) > limit


def _too_deep(limit: int) -> str:
    return f"nests arrays and objects more than {limit} levels deep (the limit is {limit})"


def _no_constant(name: str) -> Any:
    raise JsonRefused(f"is not JSON: {name} is not a JSON number")


def parse_json(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A UTF-8 JSON body from someone else, or JsonRefused saying why not: not UTF-8,
    nested deeper than `max_depth`, or not JSON (NaN and Infinity included)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRefused("is not UTF-8") from None
    if json_depth_exceeds(data, max_depth):
        raise JsonRefused(_too_deep(max_depth))
    try:
        return json.loads(data, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"is not JSON: {exc}") from None
    except JsonRefused:
        raise
    except ValueError:  # an integer of more digits than int() converts (4,300)
        raise JsonRefused("is not JSON: a number too long to read") from None
    except RecursionError:  # not reached after the depth check; never a crash anyway
        raise JsonRefused(_too_deep(max_depth)) from None


# --- characters refused in text -----------------------------------------------------------
#
# Allowed: every printable character of any script, spaces, tab (U+0009), line feed
# (U+000A), and carriage return (U+000D) only as part of a CR LF line break (what an
# HTML form or a Windows tool submits). Zero-width (non-)joiners and spaces, soft hyphens
# and variation selectors are allowed: emoji sequences and some scripts need them and
# they reorder nothing.
#
# Refused:
# * control characters (Unicode category Cc: C0 U+0000-U+001F but tab and line feed,
#   DEL U+007F, C1 U+0080-U+009F) and a carriage return not followed by a line feed -
#   NUL cannot even be stored in PostgreSQL text, the others rewrite terminals and log
#   lines;
# * the bidirectional formatting characters (Unicode's Bidi_Control property: U+061C,
#   U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), which reorder the text shown around
#   them ("Trojan Source", file names like "invoice\u202Efdp.exe");
# * the line and paragraph separators U+2028 and U+2029 (line breaks to some readers and
#   not to others; use \n) and the interlinear annotation characters U+FFF9-U+FFFB
#   (hide the text they enclose);
# * lone surrogates U+D800-U+DFFF, which JSON's \uD800 escapes can produce but are not
#   characters (not encodable as UTF-8).
_HIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
    "\ufff9-\ufffb\ud800-\udfff]|\r(?!\n)")


def _kind(char: str) -> str:
    code = ord(char)
    if char == "\r":
        return "a carriage return not followed by a line feed"
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return "a control character"
    if 0xD800 <= code <= 0xDFFF:
        return "a lone surrogate"
    if code in (0x2028, 0x2029):
        return "a line or paragraph separator"
    if 0xFFF9 <= code <= 0xFFFB:
        return "an invisible interlinear annotation character"
    return "an invisible bidirectional formatting character"


def describe(char: str) -> str:
    """`U+202E RIGHT-TO-LEFT OVERRIDE`: a character named without writing it."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def hidden_character_error(text: str) -> str | None:
    """Why `text` is refused (its first refused character, by code point and position,
    never the character itself), or None when it is fine."""
    match = _HIDDEN.search(text)
    if match is None:
        return None
    char = match.group()[0]
    return (f"contains {_kind(char)} ({describe(char)}) at character {match.start() + 1}; "
            "only printable text, tabs and line breaks (\\n or \\r\\n) are allowed")


def escape_hidden(text: str) -> str:
    """`text` with each refused character written as its escape (`\\u202e`): safe to
    echo in an error, a header or a log line."""
    if _HIDDEN.search(text) is None:
        return text
    return _HIDDEN.sub(lambda m: "".join(f"\\u{ord(c):04x}" for c in m.group()), text)


def whole_number(raw: str, max_digits: int = 9) -> int | None:
    """``raw`` as a non-negative whole number written in ASCII digits, or None. ("²" is a
    digit to str.isdigit() but not to int(); thousands of digits are no number anyone
    means, and int() refuses them.)"""
    if raw.isascii() and raw.isdigit() and len(raw) <= max_digits:
        return int(raw)
    return None
