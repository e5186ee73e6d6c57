"""The OAuth 2.1 authorization server: metadata, clients, authorize, token, revoke, JWTs."""
