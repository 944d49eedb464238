"""Built-in architectures plugins; each module registers one plugin when imported."""
