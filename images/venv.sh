#!/bin/sh
# The venv stages of images/Dockerfile: sh venv.sh LOCK SBOM
#   a venv without pip at /opt/sluice; the tools' pip installs the hash-locked wheels of LOCK into it
#   (--only-binary: no build step, so no compiler), then our wheel from /wheels (--no-index), then `pip check`;
#   imagetool.py finish-venv strips and byte-compiles it; cyclonedx-py writes its SBOM to SBOM.
set -eu
lock="$1"
sbom="$2"
. /build/pip-env.sh
python -m venv --without-pip /opt/sluice
pip="/opt/tools/bin/pip --python /opt/sluice/bin/python"
$pip install --require-hashes --only-binary=:all: --no-deps --no-compile -r "$lock"
$pip install --no-index --no-deps --no-compile /wheels/knative_sluice-*.whl
$pip check
/opt/tools/bin/python /build/imagetool.py finish-venv /opt/sluice
mkdir -p "$(dirname "$sbom")"
/opt/tools/bin/cyclonedx-py environment --output-reproducible --of JSON --output-file "$sbom" /opt/sluice/bin/python
