"""Rollout: which model serves whom, and whether the challenger lives.

``flags`` reads the AppConfig feature-flags document and assigns a shopper to the champion or
the challenger (sticky buckets, ramps, kill switch); ``experiments`` reads the per-variant
counters and runs the sequential test; ``guardrail`` kills a clearly losing challenger;
``summary`` is the console's view of it all (read-only).
"""

# What other stages may import: serving asks ``flags`` which variant a shopper gets.
PUBLIC = ("flags", "experiments")
# What a handler under functions/ may import.
ENTRY_POINTS = ("guardrail", "summary")
