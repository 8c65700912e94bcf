"""RQ side: queues, job entry points, the event dispatch table and its handlers, the worker."""
