"""Local stand-ins for remote services (only remote LLM APIs are faked)."""
