"""Data providers: one module per provider behind the Provider protocol."""
