"""What a shop embeds: the storefront snippet (recs.js) and the backend kit (backend.py)."""
