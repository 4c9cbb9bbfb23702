"""Model lifecycle: states, policy, hints and the manager that applies actions."""
