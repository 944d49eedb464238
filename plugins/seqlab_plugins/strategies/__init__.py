"""Built-in strategies plugins; each module registers one plugin when imported."""
