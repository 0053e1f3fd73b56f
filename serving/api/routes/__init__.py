"""One module per resource; `serving.main` includes each module's `router`."""
