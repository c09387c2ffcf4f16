"""Run plumbing: the project lock, process identity, DVC's lock files, stop signals and credential
redaction."""
