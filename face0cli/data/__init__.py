"""Training data: dataset readers (folders, webdataset shards, tables), prep, the triplet file."""
