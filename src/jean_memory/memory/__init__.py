"""Memories: saving, searching, listing and deleting, for one user id at a time."""
