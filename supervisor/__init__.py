"""indico-supervisor: runs an Indico site's containers under one supervising daemon."""
__version__ = "0.1.0"
