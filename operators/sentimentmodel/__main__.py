"""``python -m operators.sentimentmodel run|crd|render``: the operator's command without the
rest of shopsense (the operator image installs only what the operator needs)."""

from operators.sentimentmodel.cli import operator_app

operator_app(prog_name="shopsense-operator")
