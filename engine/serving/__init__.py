"""The live service: ``tthf-serve`` (Arrow Flight + HTTP) over the real-time predictor, and its client.

- ``protocol``: what travels on the wire (descriptors, tickets, metadata, the reply schema).
- ``service``: one day's feed, the predictor, the bounded input queue and the replies.
- ``flight``: the Arrow Flight server (``DoExchange`` feeds, ``DoGet`` subscribers).
- ``web``: health, Prometheus metrics and the live page on a second port; ``metrics`` and
  ``page`` are theirs.
- ``client``: the feeding client (``tthf-feed``): resend after a restart, retry when refused.

docs/serving.md is the user's guide.
"""
