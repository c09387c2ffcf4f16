"""Tables (CSV, Parquet): reading, schema, cleaning, feature encoding, column segments and the
boosted-trees baseline."""
