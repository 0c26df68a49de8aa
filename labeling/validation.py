"""Pure checks on what editors type: class names, tag names, confidences, attributes.

Class names may be any Unicode (accents, emoji, right-to-left scripts, quotes): they are
stored as typed and only ever reach SQL as bound parameters. What is refused is what
cannot be a name or would be dangerous elsewhere: blank, over-long, control characters,
invisible bidirectional overrides (they disguise a name's reading order), characters that draw
nothing where they stand (a name could pose as another), and path syntax (`/`, `\\`, `..`), since
class names become folder names in the retraining export.
"""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from labeling.errors import ValidationError
from labeling.schema import CLASS_NAME_MAX, CLASS_STATUSES

_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
TAG_NAME_MAX = 100
GENDERS_HINT = "free text such as female, male, non-binary"


# Characters that draw nothing although Unicode files them as letters or symbols.
_BLANK_LOOKING = set("\u2800\u3164\u115f\u1160\uffa0")
# Emoji glue: the zero-width joiner and the emoji variation selector are part of emoji sequences.
_EMOJI_GLUE = "\u200d\ufe0f"


# Characters that draw nothing where they stand (Unicode's default-ignorable letters and marks, the blank
# braille pattern): "Alice" followed by one reads as "Alice" but would be another class or tag.
_INVISIBLE = frozenset(_BLANK_LOOKING | set("\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f"))
_VS16 = "\ufe0f"


def _variation_selector(c: str) -> bool:
    return "\ufe00" <= c <= "\ufe0f" or "\U000e0100" <= c <= "\U000e01ef"


def _emoji_base(c: str) -> bool:
    """What an emoji sequence builds on: a symbol (emoji, skin tone), punctuation or digit ("‼️", "1️⃣"),
    or U+2139 INFORMATION SOURCE, the one emoji Unicode files as a letter."""
    return bool(c) and (unicodedata.category(c)[0] in "SPN" or c == "\u2139")


def _glue_in_place(text: str, i: int) -> bool:
    """Whether the emoji glue at text[i] is part of an emoji sequence.

    The emoji variation selector (U+FE0F) follows an emoji base. The zero-width joiner joins two drawn
    characters of which one is an emoji (or the one before is a combining mark: Indic scripts join a
    virama to the next letter); at an end, beside a space, or between two letters it draws nothing."""
    before, after = text[i - 1] if i else "", text[i + 1 : i + 2]
    if text[i] == _VS16:
        return _emoji_base(before)
    if not before or not after or after.isspace() or after in _EMOJI_GLUE or before.isspace():
        return False
    return _emoji_base(before) or before == _VS16 or _emoji_base(after) or unicodedata.category(before) in ("Mn", "Mc")


def refuse_invisible_characters(text: str, what: str) -> None:
    """Refuse characters that draw nothing where they stand, so that a name cannot pose as another
    ("Alice" + U+2800, U+3164, U+034F, a variation selector): fillers and blanks, the combining grapheme
    joiner, variation selectors other than the emoji one, and emoji glue outside an emoji sequence.

    Why refused and not folded into the comparison key: class name keys are stored (unique), and a new
    fold would need every stored key recomputed; refused, no stored name changes meaning."""
    bad = [c for i, c in enumerate(text) if c in _INVISIBLE or (_variation_selector(c) and c != _VS16)
           or (c in _EMOJI_GLUE and not _glue_in_place(text, i))]
    if bad:
        raise ValidationError(f"{what} {text!r} contains invisible characters {[hex(ord(c)) for c in bad]} "
                              "(blanks, fillers, variation selectors or joiners outside an emoji sequence); "
                              "remove them")


def _visible(c: str) -> bool:
    return unicodedata.category(c)[0] not in "ZC" and unicodedata.category(c) not in ("Mn", "Me") and c not in _BLANK_LOOKING


# Control (NUL, newline, escape), format (bidi overrides, zero-width) and lone surrogate characters.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
# Line and paragraph separators: `giflens history` and the app show text on its own line.
_LINE_BREAKS = frozenset({"Zl", "Zp"})


def refuse_hidden_characters(text: str, what: str, line_breaks: bool = True) -> None:
    """Refuse what a reader cannot see or what rewrites the screen around it: control characters
    (a newline forges lines in `giflens history`, NUL is stored by SQLite but refused by PostgreSQL
    with a driver error, so the same call would differ per store), bidirectional overrides (they
    disguise a text's reading order), zero-width format characters and lone surrogates (not UTF-8).
    Emoji glue is kept. `line_breaks=False` also refuses U+2028/U+2029, for text that is not
    whitespace-collapsed before it is stored."""
    if any(c in _BIDI_CONTROLS for c in text):
        raise ValidationError(f"{what} {text!r} contains an invisible bidirectional control character")
    refused = _HIDDEN_CATEGORIES if line_breaks else _HIDDEN_CATEGORIES | _LINE_BREAKS
    bad = [c for c in text if unicodedata.category(c) in refused and c not in _EMOJI_GLUE]
    if bad:
        raise ValidationError(f"{what} {text!r} contains control characters {[hex(ord(c)) for c in bad]}")


def clean_class_name(raw: Any) -> str:
    """The name as typed, NFC, trimmed, with runs of spaces made one (what a reader sees)."""
    if not isinstance(raw, str):
        raise ValidationError(f"class name must be text, got {type(raw).__name__}")
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise ValidationError("class name is empty")
    refuse_hidden_characters(name, "class name")
    name = " ".join(name.split())
    if not any(_visible(c) for c in name):
        raise ValidationError(f"class name {name!r} has no visible character")
    refuse_invisible_characters(name, "class name")
    if len(name) > CLASS_NAME_MAX:
        raise ValidationError(f"class name is {len(name)} characters long; the limit is {CLASS_NAME_MAX}")
    if (folded := len(class_name_key(name))) > CLASS_NAME_MAX:  # "ß" folds to "ss", "ﬀ" to "ff"
        raise ValidationError(f"class name is {folded} characters long once case and compatibility forms are "
                              f"folded (how names are compared); the limit is {CLASS_NAME_MAX}")
    if "/" in name or "\\" in name or name in (".", "..") or re.search(r"(^|\s)\.\.(\s|$)", name):
        raise ValidationError(f"class name {name!r} looks like a path (contains '/', '\\' or '..')")
    return name


def class_name_key(name: str) -> str:
    """Uniqueness ignores case, Unicode compatibility forms ("ＡＢ" == "ab"), runs of whitespace and
    emoji glue, so names that read the same cannot be two classes ("Brad\u200dPitt" is "BradPitt")."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return " ".join("".join(c for c in folded if c not in _EMOJI_GLUE).split())


def clean_tag_name(raw: Any) -> str:
    """Tags are lower-case words or phrases; inner whitespace collapsed."""
    if not isinstance(raw, str):
        raise ValidationError(f"tag must be text, got {type(raw).__name__}")
    tag = " ".join(unicodedata.normalize("NFKC", raw).split()).casefold()
    if not tag:
        raise ValidationError("tag is empty")
    if len(tag) > TAG_NAME_MAX:
        raise ValidationError(f"tag is {len(tag)} characters long; the limit is {TAG_NAME_MAX}")
    refuse_hidden_characters(tag, "tag")
    refuse_invisible_characters(tag, "tag")
    return tag


def check_confidence(value: Any) -> float:
    if isinstance(value, bool):  # float(True) is 1.0: a flag passed by mistake, not a confidence
        raise ValidationError(f"confidence must be a number in [0, 1], got {value!r}")
    try:
        conf = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"confidence must be a number in [0, 1], got {value!r}") from None
    if math.isnan(conf) or not 0.0 <= conf <= 1.0:
        raise ValidationError(f"confidence must be in [0, 1], got {value!r}")
    return conf


def check_id(value: Any, what: str) -> int:
    """A row id as callers pass it (int, numpy integer, digits from a form); anything else is a clear
    refusal instead of int()'s ValueError deep inside an operation."""
    if isinstance(value, bool):
        raise ValidationError(f"{what} id must be a whole number, got {value!r}")
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(f"{what} id must be a whole number, got {value!r}") from None
    return number


def check_editor(editor: Any) -> str:
    """The editor name every audit event carries: trimmed, on one line, without hidden characters
    (a name with a newline would forge lines in `giflens history`)."""
    if not isinstance(editor, str) or not editor.strip():
        raise ValidationError("an editor name is required for every change")
    editor = editor.strip()
    if len(editor) > 200:
        raise ValidationError("editor name is longer than 200 characters")
    refuse_hidden_characters(editor, "editor name", line_breaks=False)
    return editor


EXTERNAL_ID_MAX = 64


def clean_external_id(raw: Any) -> str | None:
    """A GIPHY / Freebase id (m.0c6qh) as given, trimmed; blank is none. It names a folder in the
    export and is compared as typed, so hidden characters (NUL, bidi overrides) are refused."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValidationError(f"external id must be text, got {type(raw).__name__}")
    external_id = raw.strip()
    if not external_id:
        return None
    if len(external_id) > EXTERNAL_ID_MAX:
        raise ValidationError(f"external id {external_id[:20]!r}... is longer than {EXTERNAL_ID_MAX} characters")
    refuse_hidden_characters(external_id, "external id", line_breaks=False)
    return external_id


ATTRIBUTES = ("gender", "ethnicity", "birth_year", "country")


def clean_attributes(values: dict[str, Any]) -> dict[str, Any]:
    """Demographic attributes for the bias audit; None clears one."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in ATTRIBUTES:
            raise ValidationError(f"unknown attribute {key!r}; known: {', '.join(ATTRIBUTES)}")
        if value is None or (isinstance(value, str) and not value.strip()):
            out[key] = None
        elif key == "birth_year":
            try:
                # "1970.0" is a year: pandas writes a year column with gaps as floats. Text goes through
                # float() for that; NaN (ValueError) and inf (OverflowError) are refused below.
                number = float(value) if isinstance(value, str) else value
                year = int(number)
                if isinstance(value, bool) or year != float(number):  # 1970.7 is not a year to round
                    raise ValueError
            except (TypeError, ValueError, OverflowError):
                raise ValidationError(f"birth_year must be a year, got {value!r}") from None
            if not 1800 <= year <= 2100:
                raise ValidationError(f"birth_year {year} is outside 1800..2100")
            out[key] = year
        else:
            if not isinstance(value, str):
                # a float NaN is how pandas hands over a missing cell; stored as text it would read "nan"
                raise ValidationError(f"{key} must be text, got {value!r} ({type(value).__name__}); "
                                      "None clears it, and an attribute left out keeps its value")
            refuse_hidden_characters(value, key)
            text = " ".join(value.split())
            text = text.lower() if key in ("gender", "ethnicity") else text  # before the length: "İ" lowers to 2
            limit = 200 if key == "ethnicity" else 100 if key == "country" else 64
            if len(text) > limit:
                raise ValidationError(f"{key} is longer than {limit} characters")
            out[key] = text
    return out


def check_class_status(status: str, as_typed: Any = None) -> str:
    """`status` when it is a class status, else a ValidationError quoting `as_typed` (what the editor
    or the file gave, before any cleaning), or `status` itself."""
    if status not in CLASS_STATUSES:
        shown = status if as_typed is None else as_typed
        raise ValidationError(f"class status must be one of {', '.join(CLASS_STATUSES)}, got {shown!r}")
    return status
