"""Domain code of the real-time personalization system.

Shared by every function: the regional functions receive it as a Lambda layer, the edge
build vendors it into its bundle, and training replays history through the same modules.
Modules are named for what they do; AWS sits behind the small adapters in ``adapters``.
"""
