"""Storage: SQLAlchemy Core schema, engine, and one module per kind of stored data."""
