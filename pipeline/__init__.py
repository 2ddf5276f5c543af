"""score-plugins: detect, plan, render, submit, record and notify plugin scoring runs."""

__version__ = "0.1.0"
