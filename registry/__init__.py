"""The Document Registry actor: ITI-42, ITI-18, ITI-51 over SOAP and the ITI-8 identity feed."""
