"""The embedded default model: fetch a small local model and serve it OpenAI-compatibly."""
