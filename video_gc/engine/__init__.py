"""Training, testing, optimisation, checkpoints and distributed launch."""
