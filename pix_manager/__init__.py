"""The PIX Manager actor: ITI-8 feed and ITI-9 query over MLLP, Fellegi–Sunter matching with a review queue."""
