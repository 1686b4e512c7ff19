"""Training, evaluation, export and publishing of the rankers (training extra only:
nothing here enters a Lambda bundle)."""
