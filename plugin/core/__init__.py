"""The pure domain: plain data in, decisions out (no SQLAlchemy, Flask, Redis or I/O)."""
