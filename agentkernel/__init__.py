"""AgentKernel: run notebook cells inside a managed Docker or Podman sandbox."""
