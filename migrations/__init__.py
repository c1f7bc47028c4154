"""Alembic environment and revisions of the index schema (the only way the schema changes).

Run them through `storage.db.upgrade_to_head` or `storage.db.alembic_config`; the script location
is this package's directory, so they work from an installed distribution too.
"""
