"""EBR core: settings, landing contract, synthetic marketplace, CLI."""
