"""The MCP resource server: the SDK's Streamable HTTP transport behind our token check."""
