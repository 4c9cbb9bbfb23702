"""Supervision of real model server processes (llama-server)."""
