#!/usr/bin/env bash
# The s3a connector jars for the Spark in .venv (pyspark from PyPI): hadoop-aws at the version
# of the wheel's own hadoop-client jars, plus its AWS SDK bundle, from Maven Central into
# $STRATUS_CACHE/spark-jars/hadoop-aws-<version>/ (cached by version; nothing to do when present).
# Prints the directory. Usage: hack/spark-jars.sh [path/to/python]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-$here/../.venv/bin/python}"
spark_home="$("$python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("pyspark").origin))')"
jar="$(ls "$spark_home"/jars/hadoop-client-api-*.jar | head -1)"
version="$(basename "$jar" .jar)"; version="${version#hadoop-client-api-}"
cache="${STRATUS_CACHE:-$HOME/.cache/stratus}/spark-jars/hadoop-aws-$version"
if [ -f "$cache/.complete" ]; then echo "$cache"; exit 0; fi
command -v mvn >/dev/null || { echo "spark-jars: mvn is missing (make deps installs maven)" >&2; exit 1; }
tmp="$cache.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
echo "spark-jars: fetching hadoop-aws $version and its AWS SDK bundle" >&2
mvn -q -B -f "$here/spark/pom.xml" -Dhadoop.version="$version" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
ls "$tmp"/hadoop-aws-"$version".jar >/dev/null
touch "$tmp/.complete"; rm -rf "$cache"; mv "$tmp" "$cache"
echo "$cache"
