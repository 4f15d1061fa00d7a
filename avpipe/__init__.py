"""avpipe: content-addressed audio-visual feature cache and fusion trainer."""
__version__ = "0.1.0"
