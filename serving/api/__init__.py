"""HTTP layer: thin routes (one module per resource) over the plain objects in `serving.*`."""
