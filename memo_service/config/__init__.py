"""What settings.py builds its values with. settings.py names every setting, the
environment variable it comes from and its default; these modules hold the mechanics and
the long literal blocks: the secrets (keys.py), logging (logs.py) and the pages' content
security policy (security.py)."""
