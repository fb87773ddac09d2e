"""Play counts in: readers of the three formats, the MSD-like generator, the data check (drift)."""
