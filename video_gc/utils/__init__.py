"""Small shared helpers: safe checkpoint I/O and video writing."""
