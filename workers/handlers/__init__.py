"""Event handlers: one function per event type, called by workers.jobs.process_event inside the
transaction that marks the inbox row done."""
