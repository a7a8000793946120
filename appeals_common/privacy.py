"""Personal data kept out of what people read: reports, exports, logs (DESIGN §9)."""

from __future__ import annotations

import re

# A mainland mobile (optionally +86 and grouped 3-4-4) or an area-coded landline, not part of a
# longer run of letters or digits (so reg_nos, USCCs and amounts are left alone).
_PHONE_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z])"
    r"(?P<prefix>(?:\+|00)?86[- ]?)?"
    r"(?P<number>1[3-9]\d(?:[- ]?\d{4}){2}|0\d{2,3}[- ]?\d{7,8})"
    r"(?![0-9A-Za-z])"
)


def mask_phone(phone: str | None) -> str:
    """138****8000: enough to recognise, not enough to call. None or "" gives ""."""
    if not phone:
        return ""
    digits = "".join(c for c in phone if c.isdigit())
    # +86 138…: mask the national number, not the country code.
    if len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]
    if len(digits) < 7:
        return "*" * len(phone)
    return digits[:3] + "****" + digits[-4:]


def mask_phones_in_text(text: str | None) -> str:
    """Free text with every phone number in it masked, e.g. '请致电13812345678' → '请致电138****5678'."""
    if not text:
        return ""
    return _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group("number")), text)
