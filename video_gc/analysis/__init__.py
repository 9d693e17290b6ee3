"""Global-context statistics and plots."""
