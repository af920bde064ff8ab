"""What every Olympus process shares: settings, logging, bus plumbing and the CLI."""
