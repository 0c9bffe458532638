"""HTTP-facing helpers of the service: request validation and response shapes (no BentoML, no torch)."""
