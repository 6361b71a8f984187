"""The owner UI's own sentences: field labels, validation errors, refusals of the load config.

Everything a person reads on the owner pages about a form comes from here, in
one place, so it can be catalogued for translation later (the kiosk's
:mod:`local_ui.i18n` machinery; there is no second one). A message is a
sentence about what the person did and how to go on — never a field path,
an id, pydantic's wording or JSON.

- :data:`LABELS` names every form field by hand (title shown next to the input,
  and the noun used inside sentences);
- :func:`validation_message` turns one pydantic error into such a sentence;
- :func:`load_refusal` rewrites the load manager's config checks (written for
  ``check-config`` and its field paths) as sentences for the settings forms.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Label:
    title: str
    """Next to the input: "Price per kWh"."""
    noun: str
    """Inside a sentence: "the price per kWh"."""
    unit: str = ""
    """After a number in a sentence: " A", " s", " kWh"."""
    hint: str | None = None
    """Shown under the title (None: the model's own description)."""


def _l(title: str, noun: str | None = None, unit: str = "", hint: str | None = None) -> Label:
    return Label(title, noun or "the " + title[0].lower() + title[1:], unit, hint)


LABELS: dict[str, Label] = {
    # tariff
    "currency": _l("Currency (three letters, e.g. EUR)", "the currency"),
    "per_kwh": _l("Price per kWh", hint="in the currency above; 0 for free charging"),
    "per_minute": _l("Price per minute"),
    "per_session": _l("Price per session"),
    # touchscreen
    "idle_timeout_s": _l(
        "Back to the start screen after (seconds)", "the idle time", " s", hint=""
    ),
    "welcome_text": _l("Welcome text", hint="shown on the touchscreen's start screen"),
    # names
    "station_name": _l("Station name", hint="shown on the touchscreen and on receipts"),
    "bay_names": _l("Bay names", hint="empty: the touchscreen calls the bay “Bay” and its id"),
    # site limits and circuits
    "main_limit_a": _l("Main breaker limit (A per phase)", "the main breaker limit", " A"),
    "main_guaranteed_headroom_a": _l(
        "Guaranteed headroom (A per phase)", "the guaranteed headroom", " A"
    ),
    "main_reserve_a": _l("Reserve (A per phase)", "the reserve", " A"),
    "circuits": _l("Circuits"),
    "limit_a": _l("Limit (A)", "the circuit's limit", " A"),
    "guaranteed_headroom_a": _l("Headroom (A)", "the circuit's guaranteed headroom", " A"),
    "parent": _l("Connected to", "the circuit it is connected to"),
    # modes and relay protection
    "eco_current_a": _l("Eco current (A)", "the Eco current", " A"),
    "min_on_time_s": _l("Minimum on time (s)", "the minimum on time", " s"),
    "min_off_time_s": _l("Minimum off time (s)", "the minimum off time", " s"),
    "relay_cycles_per_hour": _l(
        "Relay starts per hour", "the number of relay starts per hour", " starts"
    ),
    # rules
    "rules": _l("Rules"),
    "kind": _l("Kind", "the kind of rule"),
    "amps": _l("Current limit (A)", "the current limit", " A"),
    "kw": _l("Power limit (kW)", "the power limit", " kW"),
    "bays": _l("Bays"),
    "from": _l("From", "the start time"),
    "to": _l("To", "the end time"),
    "days": _l("Days"),
    "priority": _l("Priority"),
    "id": _l("Name", "the name"),
    # holds, bookings, tokens
    "bay_id": _l("Bay", "the bay"),
    "token": _l("Card or code", "the card or code"),
    "tokens": _l("Cards or codes", "the cards or codes"),
    "duration_s": _l("Minutes", "the hold time", " s"),
    "hold_s": _l("Minutes", "the booking's length", " s"),
    "start_at": _l("From", "the start time"),
    "mode": _l("Mode", "the charging mode"),
    "quota_wh": _l("Energy limit (Wh)", "the energy limit", " Wh"),
    "quota_s": _l("Time limit (s)", "the time limit", " s"),
    "available": _l("Available"),
    "boost_confirmed": _l("Boost confirmed"),
    # accounts
    "username": _l("User name"),
    "password": _l("Password"),
    "new_password": _l("New password"),
    "current_password": _l("Current password"),
    "role": _l("Role"),
    "code": _l("Setup code"),
    # installer tests
    "action": _l("Test", "the test"),
    "current_a": _l("Current (A)", "the test current", " A"),
    "step_a": _l("Step (A)", "the ramp step", " A"),
    # filters
    "since": _l("From", "the start date"),
    "until": _l("To", "the end date"),
    "outcome": _l("Outcome"),
    "state": _l("State"),
    "limit": _l("Rows", "the number of rows"),
    "offset": _l("Page", "the page"),
    "months": _l("Months", "the number of months"),
    "category": _l("Show", "the kind of entries"),
    "week": _l("Week", "the week"),
}

_LIST_ITEM = {"circuits": "Circuit", "rules": "Rule"}
_PHASES = ("L1", "L2", "L3")
_FALLBACK = Label("Value", "one of the values")
# An internal id (session, booking, hold): a long run of hex digits.
_ID_LIKE = re.compile(r"\b[0-9a-f]{12,}\b")


def label(field: str) -> Label:
    return LABELS.get(field, _FALLBACK)


def sentence(text: str) -> str:
    """Capitalized, ending with a period (messages are joined from parts)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _where(loc: Sequence[Any]) -> tuple[str, str | None, str]:
    """The field a location names, a prefix for items of a list ("Rule 2: ") and a phase."""
    parts = [p for p in loc if p not in ("body", "query", "path")]
    prefix = ""
    field: str | None = None
    phase = ""
    for i, p in enumerate(parts):
        if isinstance(p, int) or (isinstance(p, str) and p.isdigit()):
            n = int(p)
            before = parts[i - 1] if i else None
            if isinstance(before, str) and before in _LIST_ITEM:
                prefix = f"{_LIST_ITEM[before]} {n + 1}: "
            elif field is not None and n < 3:
                phase = _PHASES[n]
        elif isinstance(p, str) and p in LABELS and p not in _LIST_ITEM:
            field = p
    return prefix, field, phase


def validation_message(err: Mapping[str, Any]) -> str:
    """One pydantic error (``ValidationError.errors()`` item) as a sentence for a person."""
    typ = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    prefix, field, phase = _where(err.get("loc", ()))
    lab = label(field) if field else _FALLBACK
    noun = lab.noun + (f" on {phase}" if phase else "")
    unit = lab.unit
    per_phase = f"give {lab.noun} as one number for all phases, or three numbers (L1, L2, L3)"
    text: str
    if typ == "missing":
        if phase:
            text = per_phase
        elif field == "bay_id":
            text = "choose a bay"
        else:
            text = f"please fill in {noun}"
    elif typ == "extra_forbidden":
        text = "the form sent something the station does not know; reload the page and try again"
    elif typ in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        if bound in (0, 0.0) and typ == "greater_than_equal":
            text = f"{noun} cannot be negative"
        elif bound in (0, 0.0):
            text = f"{noun} must be more than zero"
        elif typ == "greater_than":
            text = f"{noun} must be more than {_num(bound)}{unit}"
        else:
            text = f"{noun} must be at least {_num(bound)}{unit}"
    elif typ in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        if typ == "less_than":
            text = f"{noun} must be less than {_num(bound)}{unit}"
        else:
            text = f"{noun} can be at most {_num(bound)}{unit}"
    elif typ == "string_too_short":
        n = ctx.get("min_length", 1)
        if n in (1, None):
            text = "choose a bay" if field == "bay_id" else f"please fill in {noun}"
        elif field in ("password", "new_password"):
            text = f"a password needs at least {n} characters"
        else:
            text = f"{noun} needs at least {n} characters"
    elif typ == "string_too_long":
        text = f"{noun} can have at most {ctx.get('max_length')} characters"
    elif typ in ("too_short", "too_long"):
        text = per_phase
    elif typ == "string_pattern_mismatch":
        if field == "username":
            text = "a user name may use letters, digits, dots, dashes, underscores and @, without spaces"
        elif field == "token":
            text = "a card or code is letters, digits and signs, without spaces"
        else:
            text = f"{noun} contains characters that are not allowed"
    elif typ.startswith("int_from_float"):
        text = f"{noun} must be a whole number"
    elif typ.startswith(("float", "int", "decimal")):
        text = f"{noun} must be a number"
    elif typ in ("literal_error", "enum", "union_tag_invalid", "union_tag_not_found"):
        text = f"choose one of the offered values for {noun}"
    elif typ.startswith(("time", "date", "datetime")):
        text = f"{noun} is not a valid date or time"
    elif typ.startswith("bool"):
        text = f"{noun} must be yes or no"
    elif typ in ("json_invalid", "json_type", "model_type", "model_attributes_type", "dict_type"):
        text = "the station could not read the form; reload the page and try again"
    elif typ.startswith("string"):
        text = f"{noun} must be text"
    elif typ in ("list_type", "tuple_type"):
        text = f"{noun} must be a list"
    elif typ == "value_error":
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        return prefix + load_refusal(msg, field or "")
    else:
        text = f"{noun} is not valid here"
    return prefix + sentence(text)


# ---------------------------------------------------------------------- load config checks

_Q = r"'([^']*)'"
_F = r"([0-9.]+)"


def _quote(name: str) -> str:
    return f"“{name}”"


def _bay_min(m: re.Match[str]) -> str:
    cm = re.match(r"circuit " + _Q + " limit_a", m.group(3))
    place = f"the limit of circuit {_quote(cm.group(1))}" if cm else "the main breaker limit"
    return (
        f"A bay needs at least {m.group(2)} A to charge, more than {place} of "
        f"{m.group(4)} A on {m.group(5)}: raise the limit or lower that bay's minimum current."
    )


def _safe_shares(m: re.Match[str]) -> str:
    cm = re.match(r"circuit " + _Q, m.group(1))
    place = f"circuit {_quote(cm.group(1))}" if cm else "the main breaker"
    return (
        f"If the controller stops, the bays on {place} fall back to {m.group(3)} A on "
        f"{m.group(2)} together ({m.group(4).replace(chr(39), '')}), but only {m.group(5)} A "
        "of guaranteed headroom is set there: raise the guaranteed headroom or lower the bays' "
        "safe current."
    )


def _switch(m: re.Match[str]) -> str:
    return (
        f"{sentence(label(m.group(1)).noun)[:-1]} must be at least {m.group(2)} s: vehicles "
        "and meters need that long to follow a change, and switching sooner makes bays flap "
        "and wears their relays."
    )


_REFUSALS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (
        re.compile(
            r"(?:site\.)?main_guaranteed_headroom_a: " + _F + r" A on (L\d) above "
            r"main_limit_a " + _F + " A"
        ),
        lambda m: (
            f"The guaranteed headroom ({m.group(1)} A on {m.group(2)}) cannot be more "
            f"than the main breaker limit ({m.group(3)} A)."
        ),
    ),
    (
        re.compile(
            r"(?:site\.)?main_reserve_a: " + _F + r" A on (L\d) leaves nothing of "
            r"main_limit_a " + _F + " A"
        ),
        lambda m: (
            f"A reserve of {m.group(1)} A on {m.group(2)} leaves nothing of the main "
            f"breaker limit ({m.group(3)} A): lower the reserve."
        ),
    ),
    (
        re.compile(r"guaranteed_headroom_a: " + _F + r" A on (L\d) above limit_a " + _F + " A"),
        lambda m: (
            f"A circuit's guaranteed headroom ({m.group(1)} A on {m.group(2)}) cannot be "
            f"more than its limit ({m.group(3)} A)."
        ),
    ),
    (
        re.compile(r"id: 'main' is reserved"),
        lambda m: "A circuit cannot be called “main”: that name stands for the main breaker.",
    ),
    (
        re.compile(r"circuits\[(\d+)\]\.id: duplicate circuit id " + _Q),
        lambda m: f"Two circuits are called {_quote(m.group(2))}: give each its own name.",
    ),
    (
        re.compile(r"circuits\[(\d+)\]\.parent: unknown circuit " + _Q),
        lambda m: (
            f"Circuit {int(m.group(1)) + 1} is connected to {_quote(m.group(2))}, which "
            "is not a circuit here: choose “main” or another circuit."
        ),
    ),
    (
        re.compile(r"circuits\[(\d+)\]\.parent: cycle through " + _Q),
        lambda m: (
            f"The circuits form a loop through {_quote(m.group(2))}: every circuit must "
            "lead up to the main breaker."
        ),
    ),
    (
        re.compile(r"bays\[(\d+)\]\.circuit_id: unknown circuit " + _Q),
        lambda m: (
            f"A bay is wired to circuit {_quote(m.group(2))}: keep that circuit (or "
            "have the installer move the bay first)."
        ),
    ),
    (
        re.compile(
            r"bays\[(\d+)\]\.min_current_a: " + _F + r" A does not fit (site\.main_limit_a|"
            r"circuit '[^']*' limit_a) " + _F + r" A on (L\d)"
        ),
        _bay_min,
    ),
    (
        re.compile(
            r"(?:site\.)?eco_current_a: " + _F + r" A below bays\[\d+\]\.min_current_a " + _F + " A"
        ),
        lambda m: (
            f"An Eco current of {m.group(1)} A is below a bay's minimum of {m.group(2)} A, "
            f"so Eco would never charge: choose at least {m.group(2)} A."
        ),
    ),
    (
        re.compile(
            r"(min_on_time_s|min_off_time_s|ev_response_s|increase_delay_s): "
            r"[0-9.]+ s is below the safe minimum of " + _F + " s"
        ),
        _switch,
    ),
    (
        re.compile(r"rules\[(\d+)\]\.id: duplicate rule id " + _Q),
        lambda m: f"Two rules are called {_quote(m.group(2))}: give each its own name.",
    ),
    (
        re.compile(r"rules\[(\d+)\]\.bays: unknown bay " + _Q),
        lambda m: (
            f"Rule {int(m.group(1)) + 1} names the bay {_quote(m.group(2))}, which this "
            "station does not have: write “all” or the names of its bays."
        ),
    ),
    (
        re.compile(r"from/to: give both ends"),
        lambda m: "Give a rule's time window both a start and an end, or leave both empty.",
    ),
    (
        re.compile(r"to: the time window is empty"),
        lambda m: (
            "A rule starts and ends at the same time: change one of them, or leave both "
            "empty for all day."
        ),
    ),
    (re.compile(r"days: at least one day"), lambda m: "Tick at least one day for each rule."),
    (
        re.compile(
            r"(main breaker|circuit '[^']*') (L\d): safe shares sum to " + _F + r" A \(([^)]*)\)"
            r" but guaranteed headroom is " + _F + " A"
        ),
        _safe_shares,
    ),
]
_PATHLIKE = re.compile(r"\b[a-z]+(?:_[a-z]+)+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*\b")


def load_refusal(message: str, field: str = "") -> str:
    """A load-config check (``check-config`` wording, with field paths) as a sentence."""
    if field and not re.match(r"^[\w.\[\]]+: ", message):
        message = f"{field}: {message}"  # a field validator's text does not name its field
    for pattern, make in _REFUSALS:
        m = pattern.search(message)
        if m:
            return make(m)
    # Unknown wording: keep its meaning, but name fields by their labels and drop paths.
    text = re.sub(r"^[\w.\[\]]+: ", "", message)
    text = _PATHLIKE.sub(lambda m: label(m.group(0).split(".")[-1].split("[")[0]).noun, text)
    return sentence(re.sub(r"'([^']*)'", r"“\1”", text))


def rule_warning(message: str) -> str:
    """A rule conflict (the load manager's wording) as a sentence with quoted rule names."""
    return sentence(re.sub(r"'([^']*)'", r"“\1”", message))


_ROLE_NAMES = {
    "owner": "an owner",
    "installer": "an installer",
    "viewer": "a viewer",
    "member": "a member",
}


def not_allowed(role: str, what: str = "do this") -> str:
    """Refusal of an action the account's role does not allow."""
    who = _ROLE_NAMES.get(role, "this account")
    return f"You are signed in as {who}, who may not {what}; ask the station's owner."


def clock_time(ts: float) -> str:
    """A wall time as the station's local "Tue 1 Dec 14:30"."""
    d = dt.datetime.fromtimestamp(ts)
    return f"{d:%a} {d.day} {d:%b %H:%M}"


def booking_overlap(bay_id: str, span: tuple[float, float] | None) -> str:
    """A booking refused because another one holds the bay then: when, and how to go on."""
    if span is None:
        when = "at that time"
    else:
        end = dt.datetime.fromtimestamp(span[1])
        when = f"from {clock_time(span[0])} to {end:%H:%M}"
    return (
        f"Bay {bay_id} is already booked {when}. Choose a free time in the calendar, "
        "another bay, or cancel that booking first."
    )


def human(text: str) -> bool:
    """True when ``text`` reads as a sentence for a person (tests assert it on every message)."""
    bad = (
        "Input should",
        "Field required",
        "Value error",
        "String should",
        "validation error",
        "{",
        "[",
        "_",
    )
    return (
        bool(text)
        and text[0].isupper()
        and text.rstrip("”").endswith((".", "!", "?"))
        and not any(b in text for b in bad)
        and not _ID_LIKE.search(text)
    )
