"""Templates and static files: the one template environment every page renders through."""
