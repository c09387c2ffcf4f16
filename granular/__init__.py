"""granular: train one model per granularity of a dataset and fuse them into one."""
