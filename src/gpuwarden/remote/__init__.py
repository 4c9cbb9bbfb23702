"""The window attached to an engine elsewhere: the control API read back into the
engine's own types (snapshots, rows, events, history), so the panel draws them as if the
engine ran here."""
