"""What subscribers read: the content of one message and its email and SMS renderings."""
