"""Readers and writers for the formats of the data contract (`pipeline.schemas`)."""
