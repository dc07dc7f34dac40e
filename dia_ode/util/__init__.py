"""Small helpers that every package may use; they import nothing from dia_ode, so they sit below all layers."""

from dia_ode.util.names import close_matches, did_you_mean, unknown_name

__all__ = ["close_matches", "did_you_mean", "unknown_name"]
