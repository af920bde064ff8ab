"""The H.A.D.E.S. worker: the only process that opens the stores."""
