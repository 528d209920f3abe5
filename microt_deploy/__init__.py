"""microt-deploy: the MicroT method from a PyTorch model to staged int8 inference on a microcontroller."""

__version__ = "0.1.0"
