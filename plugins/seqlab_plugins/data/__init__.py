"""Built-in data plugins; each module registers one plugin when imported."""
