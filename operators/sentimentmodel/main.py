"""Entry for ``kopf run -m operators.sentimentmodel.main``: the handlers in kopf's default
registry, configured from ``SHOPSENSE_OPERATOR_*``. ``shopsense operator run`` does the same
with JSON logs and a liveness endpoint."""

import kopf

from operators.sentimentmodel.handlers import register
from operators.sentimentmodel.settings import OperatorSettings

register(kopf.get_default_registry(), OperatorSettings())
