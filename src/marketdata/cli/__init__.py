"""The command line: parses, calls one core function, renders. No business logic here."""
