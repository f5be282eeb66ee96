"""The AgentKernel Sandbox Jupyter kernel."""
