"""Postgres persistence: the system of record.

`database.py` owns engines, transactions and the after-commit outbox; `models.py` the tables; one
module per aggregate holds its queries. Every state change is committed before anything about it
is published.
"""
