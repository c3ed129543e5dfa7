"""Outbound webhooks: telling the platform about answers, passed deadlines and the
evidence chain's checkpoints, signed.

messages.py queues a message per subscribed endpoint and event; events.py says what the
platform is told of an answer and of a passed deadline; delivery.py posts, signs and
retries; netguard.py keeps those posts to public addresses.
"""
