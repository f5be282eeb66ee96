"""Code that runs inside the sandbox container (stdlib only)."""
