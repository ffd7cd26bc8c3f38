"""Writing to the BMS, safely: what may be written and within which bounds (pure, no I/O)."""
