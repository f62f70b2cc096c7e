"""The one place that builds a SparkSession for this project.

``local[*]`` by default; ``SPARK_MASTER`` points the job at a cluster.  The Kafka
source/sink jars (fetched from Maven Central by ``make install`` into
``infra/spark/jars``) go on ``spark.jars``, which also ships them to executors.
Python workers run the interpreter that runs the driver, so they see the same
packages.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import SparkSettings
from app.errors import InfraError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Jars the Kafka source needs beside PySpark's own (see infra/spark/pom.xml).
REQUIRED_JAR_PREFIXES = (
    "spark-sql-kafka-0-10_2.13-",
    "spark-token-provider-kafka-0-10_2.13-",
    "kafka-clients-",
    "commons-pool2-",
)


def kafka_jars(jars_dir: Path) -> list[Path]:
    """The connector jars in ``jars_dir``, or an ``InfraError`` saying how to get them."""
    jars = sorted(jars_dir.glob("*.jar")) if jars_dir.is_dir() else []
    missing = [p for p in REQUIRED_JAR_PREFIXES if not any(j.name.startswith(p) for j in jars)]
    if missing:
        raise InfraError(
            f"Spark's Kafka connector is incomplete in {jars_dir} (missing {missing}): run "
            "`make install` (it runs `mvn -f infra/spark/pom.xml dependency:copy-dependencies`)"
        )
    return jars


def build_spark_session(
    app_name: str,
    settings: SparkSettings | None = None,
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    """Build (or return the running) SparkSession with the Kafka connector on the classpath.

    Parameters
    ----------
    app_name
        Shown in Spark's UI and logs.
    settings
        Master, jar folder, shuffle partitions, UI and driver memory; read from the
        environment when omitted.
    extra_conf
        Further ``spark.*`` settings (for example the state store provider).
    """
    settings = settings or SparkSettings()
    # Must be set before the JVM starts; harmless when already set by the caller.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_local_ip)

    from pyspark.sql import SparkSession

    jars = kafka_jars(settings.spark_jars_dir)
    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name)
        .config("spark.jars", ",".join(str(j) for j in jars))
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.default.parallelism", str(settings.spark_shuffle_partitions))
        .config("spark.ui.enabled", str(settings.spark_ui_enabled).lower())
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.streaming.forceDeleteTempCheckpointLocation", "true")
        .config("spark.executorEnv.PYSPARK_PYTHON", os.environ["PYSPARK_PYTHON"])
        .config("spark.executorEnv.PYTHONWARNINGS", "ignore::FutureWarning")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if settings.spark_master.startswith("local"):
        builder = builder.config("spark.driver.host", settings.spark_local_ip).config(
            "spark.driver.bindAddress", settings.spark_local_ip
        )
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info(
        "SparkSession %r on %s (Spark %s, %d Kafka jars)",
        app_name,
        settings.spark_master,
        spark.version,
        len(jars),
    )
    return spark
