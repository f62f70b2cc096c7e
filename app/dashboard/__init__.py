"""Live dashboard of scored hours (Dash, served by gunicorn).

Split the Merlion way: ``settings`` (configuration), ``store`` (Kafka consumer thread →
bounded, deduplicated in-memory history), ``queries`` (pure pandas over store snapshots),
``layout`` (component builders), ``callbacks`` (wiring only) and ``server`` (app factory,
``/health``, entry point).  Nothing here imports torch or pyspark.
"""
