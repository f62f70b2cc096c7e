"""Streaming: pure per-combo window state, the batch scorer core, and the Spark job."""
