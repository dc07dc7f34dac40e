"""Messages for a name that no registry holds, with the names a typo most likely meant.

Every registry (models, attention, datasets, tasks, model and task options) words its ValueError
through these functions, so a misspelt name gets the same "did you mean" in the library and on the
command line, which only prints the library's message (Click itself suggests misspelt --flags and
commands).
"""

from __future__ import annotations

import difflib
from typing import Iterable

# difflib's own default: 'dia_resnt20' -> 'dia_resnet20' scores 0.96, 'fashion_mnist' -> 'fashion-mnist'
# 0.92, while unrelated short names ('vit' against 'unet_s') stay below it.
CUTOFF = 0.6
# Only the matches about as close as the best are offered: 'dia_resnt20' is dia_resnet20 (0.96), not
# also dia_resnet32 (0.87); equally close ones ('resnet' -> resnet32, resnet44, resnet56) all stay.
MARGIN = 0.05


def close_matches(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to `name`, best first, compared without regard to case: difflib's
    matches that score within MARGIN of the best one.

    Args:
        name: what was given.
        valid: the names that would have been accepted.
        n: at most this many matches.
    """
    by_key = {str(v).lower(): str(v) for v in valid}
    given = str(name).lower()
    matches = difflib.get_close_matches(given, by_key, n=n, cutoff=CUTOFF)
    scores = [difflib.SequenceMatcher(None, given, key).ratio() for key in matches]
    return [by_key[key] for key, score in zip(matches, scores) if score >= max(scores) - MARGIN]


def did_you_mean(names: str | Iterable[str], valid: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for unknown name(s), or "" when no valid name is close.

    With several unknown names each guess says which name it replaces: " (did you mean 'x' for 'a'?)".
    """
    names = [names] if isinstance(names, str) else list(names)
    valid = list(valid)
    guesses = {name: matches for name in names if (matches := close_matches(name, valid))}
    if not guesses:
        return ""
    if len(names) == 1:
        return f" (did you mean {_either(guesses[names[0]])}?)"
    return " (did you mean " + ", ".join(f"{_either(m)} for {n!r}" for n, m in guesses.items()) + "?)"


def unknown_name(what: str, name: str, valid: Iterable[str], see: str | None = None) -> str:
    """"unknown <what> 'name' (did you mean ...?); valid: a, b" -- the message of every registry's ValueError.

    Args:
        what: the kind of name ("model", "dataset", "attention", ...).
        name: what was given.
        valid: the accepted names, listed in the message unless `see` is given.
        see: where to look the names up instead of listing them (a long registry), e.g. "`dia-ode ls models`".
    """
    valid = list(valid)
    listing = f"see {see}" if see else f"valid: {', '.join(valid)}"
    return f"unknown {what} {name!r}{did_you_mean(name, valid)}; {listing}"


def _either(matches: list[str]) -> str:
    """"'a'", "'a' or 'b'", "'a', 'b' or 'c'"."""
    quoted = [repr(m) for m in matches]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
