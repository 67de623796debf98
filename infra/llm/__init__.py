"""Language-model providers behind one small interface, and the router that picks one.

``base`` defines the interface and the errors; ``openai_provider`` speaks the
OpenAI Chat Completions protocol (OpenAI itself and OpenAI-compatible servers:
Ollama, vLLM, llama.cpp); ``anthropic_provider`` the Anthropic Messages API;
``extractive`` answers offline by quoting the passages; ``router`` maps model
names to providers with priority, fallback, retries and a circuit breaker.
Cost is the usage context's: each tenant's price book (``domain.usage``).
"""
