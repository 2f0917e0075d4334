"""One router per group of pages or endpoints."""
