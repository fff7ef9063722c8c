"""Evaluation: pure metrics, the runner over (model × attack × ε), the results store."""
