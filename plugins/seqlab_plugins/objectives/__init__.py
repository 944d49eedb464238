"""Built-in objectives plugins; each module registers one plugin when imported."""
