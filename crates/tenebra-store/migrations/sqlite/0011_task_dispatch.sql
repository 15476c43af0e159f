-- When a task was last handed to a serverless executor (an asynchronous Lambda invocation,
-- a Cloud Run request); NULL when never, or since it went back to the queue. A task is
-- handed again only when it is still runnable a lease after that (the invocation was lost,
-- throttled, or killed mid-run), so executors are not flooded with duplicates.
ALTER TABLE tasks ADD COLUMN dispatched_at INTEGER;
