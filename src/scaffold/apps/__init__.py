"""Applications built on the socket API: verifiable content streams (demo, tests) and a
replicated object store (the resumable-service example)."""
