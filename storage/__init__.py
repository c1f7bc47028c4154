"""Metadata index (SQLAlchemy) and blob stores."""
