"""The Qt application: entry point, main window, and the one bridge to the engine."""
