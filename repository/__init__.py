"""The Document Repository: ITI-41/RAD-68 in, ITI-42 to the registry, ITI-43 out."""
