"""pick stage."""
