"""The station's core: bays and sessions, the journal, safety, commands and the coordinator."""
