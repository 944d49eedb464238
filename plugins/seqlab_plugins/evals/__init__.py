"""Built-in evaluation helpers: corpus metrics shared by the eval-task plugins."""
