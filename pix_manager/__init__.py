"""The PIX Manager actor: ITI-8 feed and ITI-9 query over MLLP, scorecard matching with a review queue."""
