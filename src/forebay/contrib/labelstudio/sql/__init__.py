"""The staging schema's SQL: ``queries.sql`` (named statements) and ``migrations/``."""
