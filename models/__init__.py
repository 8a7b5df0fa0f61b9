"""Image side of the service: safe decoding, CNN embedders, training and evaluation."""
