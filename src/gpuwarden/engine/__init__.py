"""The engine: pure Python, owns all state and decisions. Never imports Qt."""
