"""Runtime safety: what the machine can do, whether a model fits before it is loaded, and
the thermal / power / memory limits the engine keeps."""
