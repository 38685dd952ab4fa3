"""Authentication for hubs and negotiate: signed expiring tokens and the Django session."""
