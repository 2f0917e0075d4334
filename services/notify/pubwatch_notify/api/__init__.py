"""Notify's HTTP side: web pages for subscribers, the events API, webhooks, health."""
