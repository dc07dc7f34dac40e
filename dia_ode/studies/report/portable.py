"""Report data that names no path of the machine that made it.

report.md and report.json travel (committed next to an experiment, attached to an issue): an absolute path
such as /tmp/cpu4/00001-report-cpu/runs/... means nothing to a reader elsewhere and tells where someone
keeps their files. So the study is named by its directory's name, a path inside the study by its path
relative to the study (runs/<key>-...), and any other absolute path that reaches the report's text (an
error message naming a data folder, a note) by its last component after "…/".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# An absolute POSIX path of two or more components, not part of a word, a URL or a relative path
# ("dia/plain", "https://...", "tests/x.py" stay as they are). Quotes, brackets and separators end it.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/`'\"()\[\]{},;:]+){2,}")


def portable(value: Any, study_dir: str | Path) -> Any:
    """`value` (report data: dicts, lists, strings, numbers) with every absolute path made portable.

    Args:
        value: the report's data, or any part of it.
        study_dir: the study directory; paths inside it become relative to it, itself its name.

    Returns:
        A copy of `value` whose strings name no absolute path (module docstring).
    """
    study = Path(study_dir).absolute()
    studies = {study, study.resolve()}  # as given and with links resolved: an error may print either

    def relative(match: re.Match) -> str:
        text = match.group(0)
        path = text.rstrip(".")  # a sentence's full stop is not part of the path
        tail = text[len(path):]
        for root in studies:
            if path == str(root):
                return study.name + tail
            if path.startswith(f"{root}/"):
                return path[len(str(root)) + 1:] + tail
        return f"…/{Path(path).name}{tail}"

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return ABSOLUTE_PATH.sub(relative, item)
        if isinstance(item, dict):
            return {walk(k): walk(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [walk(v) for v in item]
        return item

    return walk(value)


__all__ = ["ABSOLUTE_PATH", "portable"]
