"""`lifecycle demo`, the synthetic store and the fakes (Admin API store, OAuth, bulk operations): shipped so
the demo runs on a bare machine, imported by nothing in production but the CLI's demo command."""
