"""Telemetry: GPU and host probes, snapshots, ring-buffer history, the sampler."""
