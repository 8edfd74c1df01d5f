"""Worker fleets: ingestion as procrastinate jobs, one per (symbol, interval), on PostgreSQL.

queue.py builds the procrastinate app (the only place, with worker.py and jobs.py, that
imports procrastinate); ticks.py keeps the run ledger of a tick whose pairs run as separate
jobs; pairs.py runs one pair through the pipeline; enqueue.py defers a tick's pairs.
"""
