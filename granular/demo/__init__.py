"""Demo data: real example tables bundled with scikit-learn and synthetic tables with a known
hierarchy."""
