"""CaseOps: a lossless text transform that writes ASCII capitalisation as operator characters.

caseops_encode() lower-cases every ASCII word and puts its case in front of it as private-use operator
characters; caseops_decode() puts it back: caseops_decode(caseops_encode(s)) == s for every str. A tokenizer
trained on encoded text then shares one lower-case subword between "the", "The" and "THE".

Rules over each maximal run of ASCII letters (a "word"; non-ASCII letters are left as they are):
  lower-case ("iphone")       -> unchanged
  ALLCAPS, 2+ letters ("NASA") -> ALLCAPS + "nasa"
  Title ("The", "I")          -> TITLE + "the"
  mixed ("iPhone", "McDonald") -> TITLE if the first letter is upper, then CAPNEXT before every
                                  later upper-case letter: "i" CAPNEXT "phone", TITLE "mc" CAPNEXT "donald"
  a literal operator character -> ESC + that character
Operators, ids and rules are those of the records' `lossless_caps_caseops_v1` (PR #1729, used by
PR #1736 and #1855: lossless_caps.py encode_lossless_caps_v2; tokenizer ids 4-7), so their
tokenizer and data read the same way; this is our own implementation. golf.tokenizer.encode_docs applies it
to text already normalised by the tokenizer (NFKC), so the tokenizer's normaliser has nothing left to change.
"""

import re

from golf.config import GolfError

TITLE = "\ue001"  # next word: first letter upper-case
ALLCAPS = "\ue002"  # next word: every letter upper-case
CAPNEXT = "\ue003"  # next letter upper-case
ESC = "\ue004"  # next character is a literal operator character
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)  # reserved in this order as sentencepiece ids 4, 5, 6, 7

# What encode changes: maximal ASCII words holding a capital (leftmost match: from the word's first letter),
# and literal operator characters. Lower-case words never reach Python code.
_ENCODE_UNIT = re.compile(r"[A-Za-z]*[A-Z][A-Za-z]*|[\ue001-\ue004]")
# What decode must look at: maximal runs of ASCII letters and operators that hold an operator (the
# leftmost match starts at the run's first letter); all other text passes through unchanged.
_DECODE_UNIT = re.compile(r"[A-Za-z]*[\ue001-\ue004][A-Za-z\ue001-\ue004]*")


class CaseOpsError(GolfError):
    """Text that caseops_encode() cannot have produced (an operator out of place)."""


def _encode_unit(match: re.Match) -> str:
    unit = match.group()
    if unit in OPERATORS:
        return ESC + unit
    lower = unit.lower()
    if len(unit) >= 2 and unit.isupper():
        return ALLCAPS + lower
    head = TITLE if unit[0].isupper() else ""
    return head + lower[0] + "".join(CAPNEXT + c.lower() if c.isupper() else c for c in unit[1:])


def caseops_encode(text: str) -> str:
    """The CaseOps form of text: ASCII words lower-cased, their case written as operators."""
    return _ENCODE_UNIT.sub(_encode_unit, text)


def _decode_unit(unit: str, where: int) -> str:
    """One run of ASCII letters and operators back to the original text; `where` is its offset, for errors."""
    out = []
    word = None  # None between words; else the active word mode: "", TITLE or ALLCAPS
    pending = None  # an operator waiting for its letter (TITLE, ALLCAPS or CAPNEXT), or ESC
    for i, c in enumerate(unit):
        if pending == ESC:
            if c not in OPERATORS:
                raise CaseOpsError(f"offset {where + i}: ESC before {c!r}; ESC may only precede an operator character")
            out.append(c)
            pending, word = None, None  # an escaped character ends a word, as in encode
        elif c in OPERATORS:
            if pending is not None:
                raise CaseOpsError(f"offset {where + i}: operator U+{ord(c):04X} right after U+{ord(pending):04X}")
            if c in (TITLE, ALLCAPS) and word is not None:
                raise CaseOpsError(f"offset {where + i}: U+{ord(c):04X} inside a word; it may only start one")
            pending = c
        else:  # an ASCII letter
            if word is None:
                word = pending if pending in (TITLE, ALLCAPS) else ""
                upper = pending is not None
            else:
                upper = pending == CAPNEXT or word == ALLCAPS
            out.append(c.upper() if upper else c)
            pending = None
    if pending is not None:
        raise CaseOpsError(f"offset {where + len(unit) - 1}: U+{ord(pending):04X} is not followed by "
                           + ("an operator character" if pending == ESC else "an ASCII letter"))
    return "".join(out)


def caseops_decode(text: str) -> str:
    """The original of caseops_encode()'s output; CaseOpsError (one line, with the offset) on text it cannot make.

    Upper-case ASCII letters pass through unchanged: caseops_encode() never writes them, but a tokenizer's NFKC
    normaliser can (full-width "Ａ" becomes "A"), and they have one obvious meaning.
    """
    return _DECODE_UNIT.sub(lambda m: _decode_unit(m.group(), m.start()), text)
