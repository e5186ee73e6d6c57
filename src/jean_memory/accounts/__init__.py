"""People: accounts, password checks, browser sign-in sessions and API keys."""
