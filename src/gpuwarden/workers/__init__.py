"""Programs gpuwarden starts as child processes with its own Python (never imported by
the engine: a crash in native code must not take the panel down). Each serves a small
local HTTP API like llama-server's: health, request counters in llama-server's /metrics
names (so the engine's idle tracking reads them unchanged), and OpenAI-style endpoints."""
