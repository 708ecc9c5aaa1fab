"""Model access: the `openai`-client wrapper, usage normalisation and prices."""
