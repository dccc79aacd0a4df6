"""Small helpers with no cleo concepts: numbers, SQLite files, import paths, futures in bulk."""
