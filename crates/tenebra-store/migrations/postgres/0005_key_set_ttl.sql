-- Key sets may expire: a worker's sweep deletes them (rows and blobs) after this time.
ALTER TABLE key_sets ADD COLUMN expires_at BIGINT;
