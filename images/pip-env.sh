# Sourced by the Dockerfile's pip steps: the build secrets, when given, configure pip for this step only
# (a TLS-intercepting proxy's CA bundle, a pip.conf with an index mirror or proxy). Nothing is written.
# The CA bundle wins over a `cert` line in that pip.conf (environment over configuration file).
if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi
if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi
