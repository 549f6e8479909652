"""Imported by patchgap's end-to-end tests: its open is the evidence."""

GREETING = "hello from tinydist"
