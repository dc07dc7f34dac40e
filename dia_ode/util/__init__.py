"""Small helpers that every package may use; they import nothing from dia_ode, so they sit below all layers."""

from dia_ode.util.files import UnreadableFile, open_regular, read_json, read_json_lines, read_regular
from dia_ode.util.names import close_matches, did_you_mean, unknown_name

__all__ = ["UnreadableFile", "close_matches", "did_you_mean", "open_regular", "read_json", "read_json_lines",
           "read_regular", "unknown_name"]
