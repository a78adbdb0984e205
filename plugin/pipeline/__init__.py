"""Background work: the queue (the only enqueue calls), draining deliveries, running actions, the tick,
the worker and the scheduler."""
