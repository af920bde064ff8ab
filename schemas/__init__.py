"""Message contracts of the Olympus bus. No I/O lives here."""
