"""Scores and runs in SQL through SQLAlchemy 2.0: models, profiles, sessions, ingest, queries.

Imports nothing else of ours, so the job side never needs it.
"""
