"""seqlab built-in plugins, loaded through the `seqlab.plugins` entry-point group like any third-party package."""
