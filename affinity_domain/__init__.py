"""What every actor of the xdsi affinity domain shares. Imports no actor."""
