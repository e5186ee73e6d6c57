"""Test support: real servers on 127.0.0.1 and the OAuth steps a client takes."""
