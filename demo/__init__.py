"""``xdsi demo``: the affinity domain's story, told over the wire only (it imports no actor)."""
