"""The control API: gpuwarden's engine over HTTP for programs and other machines (status,
models and their actions, the event stream, probes, Prometheus metrics). Served by the
window and by `gpuwarden headless` alike; the engine stays the one owner of state."""
