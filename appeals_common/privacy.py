"""Personal data kept out of what people read: reports, exports, logs, dead-letter headers
and the views of readers who need not see it (DESIGN §9).

* `mask_phone`: 138****8000; `mask_name`: 张三 → 张*.
* `mask_phones_in_text`: every phone number in free text, however it is written (full-width
  digits, spaces or dashes between the groups, a +86 / 0086 prefix, the area code in
  brackets).
* `mask_personal`: a whole view (dicts, lists, strings) for a reader such as a `viewer`:
  contact phones and names by field, phones in every text, and the contact names the view
  holds wherever they recur in its texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# Full-width forms (１３８, －, ＋, （）, the ideographic space) and other dashes as their
# ASCII twins, one character for one: the masks apply to the original text by position.
_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FOLD.update({0x3000: 0x20, 0x00A0: 0x20, 0x2002: 0x20, 0x2003: 0x20, 0x2009: 0x20,
              0x2010: 0x2D, 0x2011: 0x2D, 0x2012: 0x2D, 0x2013: 0x2D, 0x2014: 0x2D,
              0x2212: 0x2D, 0x30FC: 0x2D})

# Between two groups of a number: a dash (spaces around it allowed) or one or two spaces.
_SEP = r"(?:[ \t]*-[ \t]*|[ \t]{1,2})"
# A mainland mobile (11 digits, grouped any way) or an area-coded landline (the code maybe in
# brackets), optionally after +86 / 0086 / 86, not part of a longer run of digits nor between
# two letters (so reg_nos, USCCs and amounts are left alone, 'tel13800138000' is not).
# Matched on the folded text.
_PHONE_IN_TEXT = re.compile(
    r"(?<![0-9])"
    rf"(?P<prefix>\(?(?:\+|00)?86\)?{_SEP}?)?"
    r"(?P<number>"
    rf"1[3-9](?:{_SEP}?[0-9]){{9}}"
    rf"|\(0[0-9]{{2,3}}\){_SEP}?(?:[0-9]{{7,8}}|[0-9]{{3,4}}{_SEP}[0-9]{{4}})"
    rf"|0[0-9]{{2,3}}{_SEP}?(?:[0-9]{{7,8}}|[0-9]{{3,4}}{_SEP}[0-9]{{4}})"
    r")"
    r"(?![0-9])"
)

# Fields of a view that hold a phone number or a person's name (an enterprise's contact).
PHONE_FIELDS = frozenset({"contact_phone", "phone", "mobile"})
NAME_FIELDS = frozenset({"contact_name", "contact_person"})
# Identifiers and codes: never free text, never masked (a uuid's last group could look like
# a landline number).
_KEPT_FIELDS = frozenset({"reg_no", "reg_nos", "uscc", "order_no", "class_id", "possible_duplicate_of"})


def _fold(text: str) -> str:
    return text.translate(_FOLD)


def _letter(text: str, index: int) -> bool:
    return 0 <= index < len(text) and text[index].isascii() and text[index].isalpha()


def mask_phone(phone: str | None) -> str:
    """138****8000: enough to recognise, not enough to call. None or "" gives ""."""
    if not phone:
        return ""
    digits = "".join(c for c in _fold(phone) if "0" <= c <= "9")
    # +86 138… / 0086 138…: mask the national number, not the country code.
    if len(digits) == 15 and digits.startswith("00861"):
        digits = digits[4:]
    if len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]
    if len(digits) < 7:
        return "*" * len(phone)
    return digits[:3] + "****" + digits[-4:]


def mask_name(name: str | None) -> str:
    """张三 → 张*, 欧阳娜娜 → 欧***: the first character kept. None or "" gives ""."""
    if not name:
        return ""
    name = name.strip()
    if len(name) <= 1:
        return "*" * len(name)
    return name[0] + "*" * (len(name) - 1)


def mask_phones_in_text(text: str | None) -> str:
    """Free text with every phone number in it masked, e.g. '请致电13812345678' → '请致电138****5678',
    '１３８－００１３－８０００' and '+86 138 0013 8000' → '138****8000'."""
    if not text:
        return ""
    folded = _fold(text)
    out, last = [], 0
    for match in _PHONE_IN_TEXT.finditer(folded):
        start, end = match.span()
        if _letter(folded, start - 1) and _letter(folded, end):
            continue  # inside a code such as a USCC
        out.append(text[last:start])
        out.append(mask_phone(match.group("number")))
        last = end
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def mask_names_in_text(text: str | None, names: Iterable[str | None]) -> str:
    """Free text with each of `names` (a contact's name, known from its field) masked
    wherever it occurs. Names shorter than two characters are left: too many false hits."""
    if not text:
        return ""
    for name in sorted({n.strip() for n in names if n and len(n.strip()) >= 2}, key=len,
                       reverse=True):
        text = text.replace(name, mask_name(name))
    return text


def mask_text(text: str | None, names: Iterable[str | None] = ()) -> str:
    """Phones and the given names masked in one text (log lines, error texts)."""
    return mask_names_in_text(mask_phones_in_text(text), names)


def _names_in(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in NAME_FIELDS and isinstance(item, str):
                found.add(item)
            else:
                _names_in(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _names_in(item, found)


def mask_personal(value: Any, names: Iterable[str | None] = ()) -> Any:
    """A copy of a view (JSON-like) with personal data masked: phone and contact-name
    fields, and in every other text the phone numbers and the contact names found in the
    view (or given). Identifiers (`reg_no`, `*_id`, …) are left as they are."""
    found = {n for n in names if n}
    _names_in(value, found)
    return _mask(value, tuple(found))


def _mask(value: Any, names: tuple[str, ...], key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, names, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v, names, key) for v in value]
    if not isinstance(value, str) or key is not None and (
            key in _KEPT_FIELDS or key.endswith(("_id", "_ids"))):
        return value
    if key in PHONE_FIELDS:
        return mask_phone(value)
    if key in NAME_FIELDS:
        return mask_name(value)
    return mask_text(value, names)


def as_read_by(reader: Any, view: Any) -> Any:
    """A view as ``reader`` (a Principal) may have it: a viewer gets contact phones and
    names masked, in free text too; the bureau and departments (given only their own
    share by the services) see it as it is."""
    return mask_personal(view) if reader.role == "viewer" else view
