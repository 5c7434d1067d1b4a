"""Writers of tiny datasets in the upstream on-disk formats; one module per format, each with ``write``."""
