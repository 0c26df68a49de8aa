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
import numbers
import re
import unicodedata
from datetime import date
from typing import Any

from labeling.errors import NotFoundError, ValidationError
from labeling.schema import CLASS_NAME_MAX, CLASS_STATUSES

_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
TAG_NAME_MAX = 100


# What messages escape (`as_typed`): control characters and surrogates, line and paragraph breaks (one message
# stays one line), and the bidi controls (they would reorder the text around them).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _escaped(c: str) -> str:
    return repr(c)[1:-1] if unicodedata.category(c) in _ESCAPED_CATEGORIES or c in _BIDI_CONTROLS else c


def as_typed(text: str) -> str:
    """Text for one line of a message: control and line break characters, surrogates and bidi controls
    escaped as repr writes them ('\\n', '\\x00', '\\u2028'), everything else as typed: the zero-width
    non-joiner of a Persian word, the joiner of an emoji sequence (the rainbow flag), no-break spaces, the tag
    characters of a subdivision flag.

    Why not str.isprintable, as repr does: it refuses those format characters, so names typed with them
    showed with a literal \\u200c or \\u200d in every summary, conflict, history line and page message."""
    return "".join(map(_escaped, text))


def quoted(name: str) -> str:
    """A name quoted for a message or summary, as repr quotes it ('wow', "it's"), with `as_typed`'s characters
    escaped and quotes and backslashes too: still a Python string literal (`names_in_summary` reads it back
    with ast.literal_eval), and the same text as repr for every name repr prints as typed."""
    quote = '"' if "'" in name and '"' not in name else "'"  # the quote repr picks
    return quote + "".join("\\" + c if c in (quote, "\\") else _escaped(c) for c in name) + quote


GENDERS_HINT = "free text such as female, male, non-binary"


# Characters that draw nothing although Unicode files them as letters or symbols.
_BLANK_LOOKING = set("\u2800\u3164\u115f\u1160\uffa0")
# Emoji glue: the zero-width joiner and the emoji variation selector are part of emoji sequences.
_EMOJI_GLUE = "\u200d\ufe0f"
_ZWJ, _ZWNJ, _VS15, _VS16 = "\u200d", "\u200c", "\ufe0e", "\ufe0f"
_KEYCAP, _BLACK_FLAG, _CANCEL_TAG = "\u20e3", "\U0001f3f4", "\U000e007f"

# Invisible wherever they stand: the blank-looking fillers, the combining grapheme joiner, Khmer's
# inherent vowels (which Unicode says not to use). "Alice" + one of them reads as "Alice".
_INVISIBLE = frozenset(_BLANK_LOOKING | set("\u034f\u17b4\u17b5"))
_MONGOLIAN_FVS = frozenset("\u180b\u180c\u180d\u180f")
# Format characters a name may hold, each only where it does something (`refuse_invisible_characters`):
# the joiners, and the tag characters of an emoji flag tag sequence (England: U+1F3F4 + tags + cancel tag).
_NAME_FORMAT = frozenset({_ZWJ, _ZWNJ, *map(chr, range(0xE0020, 0xE0080))})

# Scripts whose letters change shape beside a (non-)joiner: Arabic and its relatives, Mongolian, and the
# Brahmic scripts (a virama + joiner makes a half form, a chillu, a ya-phala). In Latin, Greek, Cyrillic
# or CJK text a joiner draws nothing.
_SHAPING_SCRIPTS = ((0x0600, 0x08FF), (0x0900, 0x0DFF), (0x0F00, 0x109F), (0x1780, 0x18AF), (0x1A00, 0x1C4F),
                    (0xA800, 0xA8FF), (0xA980, 0xAAFF), (0xABC0, 0xABFF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFC),
                    (0x10A00, 0x10A5F), (0x10AC0, 0x10AFF), (0x10B80, 0x10BAF), (0x10D00, 0x10D3F),
                    (0x10F30, 0x10FFF), (0x11000, 0x11DFF), (0x1E900, 0x1E95F))
# CJK ideographs, what ideographic variation selectors (U+E0100..) and most standardized ones follow.
_IDEOGRAPHS = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))


def _in(c: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    return bool(c) and any(lo <= ord(c) <= hi for lo, hi in ranges)


def _shaping_letter(c: str) -> bool:
    """A letter or mark of a script in which joiners and selectors change what is drawn."""
    return _in(c, _SHAPING_SCRIPTS) and unicodedata.category(c)[0] in "LM"


def _symbol(c: str) -> bool:
    """What an emoji sequence builds on: a symbol (emoji, ©, skin tone), non-ASCII punctuation ("‼", "〰"),
    or U+2139 INFORMATION SOURCE, the one emoji Unicode files as a letter."""
    return bool(c) and (unicodedata.category(c)[0] == "S" or (unicodedata.category(c)[0] == "P" and not c.isascii())
                        or c == "\u2139")


def _variation_selector(c: str) -> bool:
    return "\ufe00" <= c <= "\ufe0f" or "\U000e0100" <= c <= "\U000e01ef"


def _selector_in_place(c: str, before: str, after: str) -> bool:
    """A variation selector picks a glyph of the character before it: text or emoji style of a symbol
    ("☺︎", "❤️", keycaps "1️⃣" where U+20E3 follows), a variant of a CJK ideograph ("葛󠄀"), of a math
    symbol or of a letter of a shaping script. After a Latin letter or at the start it selects nothing."""
    if c in (_VS15, _VS16):
        return _symbol(before) or (before != "" and before in "0123456789#*" and after == _KEYCAP)
    if c >= "\U000e0100":
        return _in(before, _IDEOGRAPHS)
    return _symbol(before) or _in(before, _IDEOGRAPHS) or _shaping_letter(before)


def _joiner_in_place(c: str, before: str, after: str) -> bool:
    """A (non-)joiner shapes the letter before it in a shaping script (Persian "فرخ‌زاد", Malayalam
    chillu "ന്‍", Bengali ya-phala "র‍্য", an Arabic joining form at a word's end); the zero-width joiner
    also joins two emoji into one ("👨‍👩‍👧"). Anywhere else (after a Latin letter, a space, at the
    start, an emoji joined to nothing) it draws nothing."""
    if _shaping_letter(before):
        return True
    return c == _ZWJ and (_symbol(before) or before == _VS16) and _symbol(after)


def _tag_sequences(text: str) -> set[int]:
    """Positions of tag characters that form an emoji flag tag sequence: U+1F3F4, tags U+E0020..E007E,
    then the cancel tag U+E007F (🏴 England, Scotland, Wales)."""
    inside: set[int] = set()
    for m in re.finditer("\U0001f3f4([\U000e0020-\U000e007e]+)\U000e007f", text):
        inside.update(range(m.start(1), m.end()))
    return inside


def _out_of_place(text: str) -> list[str]:
    """The characters of `text` that draw nothing where they stand (see `refuse_invisible_characters`)."""
    tags = _tag_sequences(text)
    bad = []
    for i, c in enumerate(text):
        before, after = text[i - 1] if i else "", text[i + 1 : i + 2]
        if c in _INVISIBLE:
            bad.append(c)
        elif c in (_ZWJ, _ZWNJ):
            if not _joiner_in_place(c, before, after):
                bad.append(c)
        elif _variation_selector(c):
            if not _selector_in_place(c, before, after):
                bad.append(c)
        elif c in _MONGOLIAN_FVS:
            if not ("\u1820" <= before <= "\u18aa"):
                bad.append(c)
        elif "\U000e0000" <= c <= "\U000e007f" and i not in tags:
            bad.append(c)
    return bad


def refuse_invisible_characters(text: str, what: str) -> None:
    """Refuse characters that draw nothing where they stand, so that a new name cannot pose as another
    ("Alice" + U+2800, U+3164, U+034F, a variation selector, a joiner): the blank-looking fillers and the
    combining grapheme joiner always; joiners, variation selectors and Mongolian free variation selectors
    only where they select or shape nothing (after a Latin letter, a space, at the start); tag characters
    outside an emoji flag tag sequence. Scripts that need them keep them: Persian, Indic, Arabic,
    Mongolian, CJK ideographic variants, emoji sequences.

    Run when a name is created or renamed, never when one is looked up: a name stored before a rule
    existed must stay reachable (removed, rejected, found). Why refused and not folded into the
    comparison key: class name keys are stored (unique), and a new fold would need every stored key
    recomputed; refused, no stored name changes meaning."""
    bad = _out_of_place(text)
    if bad:
        raise ValidationError(f"{what} {text!r} contains invisible characters {[hex(ord(c)) for c in bad]} "
                              "(blanks, fillers, or joiners and variation selectors where they join or select "
                              "nothing); remove them")


def _visible(c: str) -> bool:
    return unicodedata.category(c)[0] not in "ZC" and unicodedata.category(c) not in ("Mn", "Me") and c not in _BLANK_LOOKING


# Control (NUL, newline, escape), format (bidi overrides, zero-width) and lone surrogate characters.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
# Line and paragraph separators: `giflens history` and the app show text on its own line.
_LINE_BREAKS = frozenset({"Zl", "Zp"})


def refuse_hidden_characters(text: str, what: str, line_breaks: bool = True,
                             kept: frozenset[str] | str = _EMOJI_GLUE) -> None:
    """Refuse what a reader cannot see or what rewrites the screen around it: control characters
    (a newline forges lines in `giflens history`, NUL is stored by SQLite but refused by PostgreSQL
    with a driver error, so the same call would differ per store), bidirectional overrides (they
    disguise a text's reading order), zero-width format characters and lone surrogates (not UTF-8).
    `kept` format characters pass: emoji glue by default; names also keep the zero-width non-joiner and
    flag tag characters (`_NAME_FORMAT`), which `refuse_invisible_characters` checks in place when a name
    is created. `line_breaks=False` also refuses U+2028/U+2029, for text that is not
    whitespace-collapsed before it is stored."""
    if any(c in _BIDI_CONTROLS for c in text):
        raise ValidationError(f"{what} {text!r} contains an invisible bidirectional control character")
    refused = _HIDDEN_CATEGORIES if line_breaks else _HIDDEN_CATEGORIES | _LINE_BREAKS
    bad = [c for c in text if unicodedata.category(c) in refused and c not in kept]
    if bad:
        raise ValidationError(f"{what} {text!r} contains control characters {[hex(ord(c)) for c in bad]}")


def _clean_name(raw: Any, what: str, new: bool) -> str:
    """A name as typed, NFC, trimmed, with runs of spaces made one, refused when it is not text, blank,
    holds hidden characters, draws nothing, or is over-long; `what` names the field in the messages."""
    if not isinstance(raw, str):
        raise ValidationError(f"{what} must be text, got {type(raw).__name__}")
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise ValidationError(f"{what} is empty")
    refuse_hidden_characters(name, what, kept=_NAME_FORMAT)
    name = " ".join(name.split())
    if not any(_visible(c) for c in name):
        raise ValidationError(f"{what} {name!r} has no visible character")
    if new:
        refuse_invisible_characters(name, what)
    if len(name) > CLASS_NAME_MAX:
        raise ValidationError(f"{what} is {len(name)} characters long; the limit is {CLASS_NAME_MAX}")
    return name


def clean_class_name(raw: Any, new: bool = True) -> str:
    """The name as typed, NFC, trimmed, with runs of spaces made one (what a reader sees).

    new=False for a name looked up, not given to a class (`find_class`): it skips the check of
    invisible characters (`refuse_invisible_characters`), so a class named before that rule stays
    reachable. The default checks: most callers are about to create a class or read a file that may."""
    name = _clean_name(raw, "class name", new)
    if (folded := len(class_name_key(name))) > CLASS_NAME_MAX:  # "ß" folds to "ss", "ﬀ" to "ff"
        raise ValidationError(f"class name is {folded} characters long once case and compatibility forms are "
                              f"folded (how names are compared); the limit is {CLASS_NAME_MAX}")
    if "/" in name or "\\" in name or name in (".", "..") or re.search(r"(^|\s)\.\.(\s|$)", name):
        raise ValidationError(f"class name {name!r} looks like a path (contains '/', '\\' or '..')")
    return name


def clean_display_name(raw: Any, new: bool = True) -> str:
    """A class's display name, checked as a name (`clean_class_name`) but for the path rule: it is what a
    reader sees ("AC/DC"), never a folder name (the export writes it only as a column of classes.csv),
    and it is not a key, so it has no folded length either. new=False as in `clean_class_name`."""
    return _clean_name(raw, "display name", new)


def class_name_key(name: str) -> str:
    """Uniqueness ignores case, Unicode compatibility forms ("ＡＢ" == "ab"), runs of whitespace and
    emoji glue, so names that read the same cannot be two classes ("Brad\u200dPitt" is "BradPitt").

    Normalised again after folding (NFKC_Casefold): casefold decomposes some letters ("ΐ" to ι + two
    marks) but not their capitals' folds ("Ϊ́" to ϊ + one mark), so only a normal form makes them one.
    Turkic dotted and dotless i are folded to "i": "BARIŞ" folds to "bariş" and "İ" to "i" + U+0307, so
    without it "Barış Manço" and its upper case would be two classes. A change here changes stored
    keys: a migration recomputes them (0005, 0010)."""
    glueless = "".join(c for c in name if c not in _EMOJI_GLUE)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", glueless).casefold())
    folded = folded.replace("\u0131", "i").replace("i\u0307", "i")  # then "i" + U+0307 + U+0301 is "í"
    return " ".join(unicodedata.normalize("NFKC", folded).split())


# letters Unicode does not split into a base letter and an accent, read as the Latin letters people type
# for them ("Lukasz" finds "Łukasz"): after casefold, so lower case only
_UNDECOMPOSED = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "ð": "d", "ħ": "h", "æ": "ae", "œ": "oe", "þ": "th"})


def search_key(text: str) -> str:
    """`class_name_key` without accents, "_" read as a space: "Beyoncé", "BEYONCE" and "Beyonce" are
    "beyonce", "Brad_Pitt" is "brad pitt". For finding and warning, never for uniqueness.

    Why: GIPHY's list spells names without accents and with underscores (Celine_Dion_[m.01cwhp]), while
    editors type them as written ("Céline Dion"); matching only `class_name_key` told them no class
    matched, and they added the same person again. Not the uniqueness key: "Müller" and "Muller" may well
    be two people, so an editor decides (the Classes page warns); changing it would need a migration."""
    key = class_name_key(text).replace("_", " ").translate(_UNDECOMPOSED)
    bare = "".join(c for c in unicodedata.normalize("NFKD", key) if not unicodedata.combining(c))
    return " ".join(unicodedata.normalize("NFC", bare).split())


def _final_sigma(text: str) -> str:
    """"σ" at the end of a word (after a letter, its accents skipped, and before no letter or accent) made
    "ς" again, as lower case writes it: casefold makes every sigma "σ", so "Σοφός" was stored "σοφόσ"."""
    out = list(text)
    for i, c in enumerate(out):
        if c != "\u03c3":
            continue
        j = i - 1
        while j >= 0 and unicodedata.category(out[j]) in ("Mn", "Me"):
            j -= 1
        after = out[i + 1] if i + 1 < len(out) else ""
        if j >= 0 and unicodedata.category(out[j])[0] == "L" and not (after and unicodedata.category(after)[0] in "LM"):
            out[i] = "\u03c2"
    return "".join(out)


def _without_presentation_selectors(text: str) -> str:
    """`text`, NFC, without the text and emoji presentation selectors (U+FE0E, U+FE0F) that select a
    presentation: after a symbol or a keycap's digit (`_selector_in_place`), judged against the last
    character kept ("❤" + two U+FE0F is "❤"), again after NFC until none goes ("=" U+FE0E U+0338 U+FE0F
    composes "≠" before the last selector once the first is gone), so a second fold drops nothing more.
    A stray one (after a letter, a space) selects nothing and stays: `refuse_invisible_characters`
    refuses it in a new name, and a name stored with one before that rule stays reachable under it."""
    text = unicodedata.normalize("NFC", text)
    while True:
        out: list[str] = []
        for i, c in enumerate(text):
            if not (c in (_VS15, _VS16) and _selector_in_place(c, out[-1] if out else "", text[i + 1 : i + 2])):
                out.append(c)
        kept = unicodedata.normalize("NFC", "".join(out))
        if kept == text:
            return text
        text = kept


def fold_tag_name(text: str) -> str:
    """The name a tag is stored and looked up by, without the checks (`clean_tag_name` says why each step);
    migrations 0011 and 0014 recompute stored names with it.

    Presentation selectors go (`_without_presentation_selectors`): how a symbol is drawn, text "❤︎" or
    emoji "❤️", is not which word a tag is; kept, "❤" and "❤️" were two tags that look alike (adding "❤" to
    a GIF tagged "❤️" was not refused as already there, the Per tag box listed both, experts voting and
    tags.jsonl split one word in two). Emoji sequences stay whole ("❤️‍🔥" is stored U+2764 U+200D U+1F525),
    and other variation selectors stay (a CJK or math variant is a glyph an editor chose)."""
    tag = " ".join(unicodedata.normalize("NFKC", text).split()).casefold()
    tag = _without_presentation_selectors(tag)
    # every dot above after an "i" goes (not one: "İ" + U+0307 left "i" + U+0307, folded again to "i", so a
    # stored name would not be its own fold and migration 0011 met two tags renamed alike)
    tag = re.sub("i\u0307+", "i", tag.replace("\u0131", "i"))  # then "i" + U+0307 + U+0301 is "í"
    return _final_sigma(unicodedata.normalize("NFC", tag))


def clean_tag_name(raw: Any, new: bool = False) -> str:
    """Tags are lower-case words or phrases; inner whitespace collapsed.

    Compared without case, so the name stored is the same for any case it is typed in: NFKC, casefolded,
    Turkic dotted and dotless i folded to "i" as in `class_name_key` ("İstanbul", "ISTANBUL" and
    "ıstanbul" are one tag, "istanbul", not three, the first with a stray U+0307), normalised again (NFC:
    casefold leaves some letters decomposed) and a word's last sigma written "ς" again ("Σοφός", "ΣΟΦΟΣ"
    and "σοφός" are "σοφός"). Casefold's other expansions stay, since they are what makes two spellings
    match without case: "Straße" is stored "strasse", one tag with "STRASSE". A change here changes
    stored names: a migration recomputes them and merges the tags that become one (0011).

    Mostly used to look a tag up (remove, reject, filter, match a vote), so the check of invisible
    characters runs only with new=True, or where a tag is created (`labeling.tags.tag_ids`): a tag
    stored before that rule stays reachable."""
    if not isinstance(raw, str):
        raise ValidationError(f"tag must be text, got {type(raw).__name__}")
    tag = fold_tag_name(raw)
    if not tag:
        raise ValidationError("tag is empty")
    if len(tag) > TAG_NAME_MAX:
        raise ValidationError(f"tag is {len(tag)} characters long; the limit is {TAG_NAME_MAX}")
    refuse_hidden_characters(tag, "tag", kept=_NAME_FORMAT)
    if new:
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


def whole_number(value: Any, what: str) -> int:
    """A whole number as callers pass it (int, numpy integer, digits from a form); anything else is a clear
    refusal instead of int()'s ValueError deep inside an operation. No range: a version or a count."""
    if isinstance(value, bool):
        raise ValidationError(f"{what} id must be a whole number, got {value!r}")
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(f"{what} id must be a whole number, got {value!r}") from None
    return number


# The id columns are INTEGER: PostgreSQL refuses a bound number beyond them with a DataError ("integer out
# of range") and SQLite one beyond 64 bits with an OverflowError, where a smaller unknown id is "not found".
ID_MIN, ID_MAX = -(2**31), 2**31 - 1
# What each lookup says of an id no row has, word for word, so that an id beyond the columns reads the same.
_NOT_FOUND = {"audit event": "no audit event {id}", "class": "no celebrity class with id {id}",
              "face": "no face with id {id}", "media": "no media with id {id}", "track": "no face track with id {id}"}


def check_id(value: Any, what: str) -> int:
    """A row id as callers pass it (`whole_number`); one no id column can hold is a NotFoundError
    worded as the lookup words an unknown id (`_NOT_FOUND`).

    Why here: every public operation checks its ids on entry, and an id like 2**40 (a typo, a
    hash pasted for an id) must be "not found" on every store, not a database traceback on PostgreSQL."""
    number = whole_number(value, what)
    if not ID_MIN <= number <= ID_MAX:
        raise NotFoundError(_NOT_FOUND.get(what, "no {what} with id {id}").format(what=what, id=number))
    return number


def check_editor(editor: Any) -> str:
    """The editor name every audit event carries: NFC, trimmed, on one line, without hidden characters
    (a name with a newline would forge lines in `giflens history`). Why NFC: "José" typed on a Mac (an
    "e" + U+0301) and elsewhere (one "é") is one editor, whose Undo last and recent operations find both."""
    if not isinstance(editor, str) or not editor.strip():
        raise ValidationError("an editor name is required for every change")
    editor = unicodedata.normalize("NFC", editor).strip()
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


YEAR_TEXT = re.compile(r"[0-9]{1,9}(?:\.0+)?")  # 1975, and 1975.0 as spreadsheets export a year column with gaps


def birth_year_number(value: Any) -> int | None:
    """A birth year as an int, or None when `value` is no year written as one.

    Text must be ASCII digits, optionally followed by ".0" (pandas and spreadsheets write a year column
    with gaps as floats): float() also read "2e3" as 2000 and "99999999999999999999" as 1e20, which an
    error then echoed as 100000000000000000000, neither of them what was typed. A number must be whole
    (1970.7 is not a year to round); True is not 1, NaN and infinity are not years."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        return int(text.split(".")[0]) if YEAR_TEXT.fullmatch(text) else None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


ATTRIBUTES = ("gender", "ethnicity", "birth_year", "country")


def clean_attributes(values: dict[str, Any]) -> dict[str, Any]:
    """Demographic attributes for the bias audit; None clears one. Text is stored NFC, runs of
    whitespace made one."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in ATTRIBUTES:
            raise ValidationError(f"unknown attribute {key!r}; known: {', '.join(ATTRIBUTES)}")
        if value is None or (isinstance(value, str) and not value.strip()):
            out[key] = None
        elif key == "birth_year":
            year = birth_year_number(value)
            if year is None:
                raise ValidationError(f"birth_year must be a year, got {value!r} (digits, as 1975)")
            # no later than this year: a future birth year is a typo, and the bias audit would count it as a
            # decade of people not born yet ("2090s") among the groups it compares
            this_year = date.today().year
            if not 1800 <= year <= this_year:
                shown = year if str(year) == str(value).strip() else repr(value)  # the text as given, if it differs
                raise ValidationError(f"birth_year {shown} is outside 1800..{this_year}"
                                      + (" (a birth year cannot be in the future)" if year > this_year else ""))
            out[key] = year
        else:
            if not isinstance(value, str):
                # a float NaN is how pandas hands over a missing cell; stored as text it would read "nan"
                raise ValidationError(f"{key} must be text, got {value!r} ({type(value).__name__}); "
                                      "None clears it, and an attribute left out keeps its value")
            refuse_hidden_characters(value, key)
            # NFC first: "Türkiye" typed with a precomposed "ü" and with "u" + U+0308 is one country, stored
            # one way (rows stored before are not rewritten: the bias audit groups values by NFC too)
            text = " ".join(unicodedata.normalize("NFC", value).split())
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
