"""One module per artifact: its schema, reader and writer (the only code that touches its files)."""
