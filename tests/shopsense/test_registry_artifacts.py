"""What a user of MLflow expects to find on a training run and its registered model."""

import json
import os
import subprocess
import sys
import textwrap

from shopsense.settings import get_settings


def test_run_has_figures_dataset_inputs_and_an_input_example(registered_model):
    from mlflow import MlflowClient

    c = MlflowClient(get_settings().tracking_uri())
    run = c.get_run(registered_model["run_id"])
    names = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "reliability_diagram.png", "evaluation.json"} <= names
    contexts = {}
    for d in run.inputs.dataset_inputs:
        ctx = {t.key: t.value for t in d.tags}.get("mlflow.data.context")
        contexts[ctx] = d.dataset
    assert contexts["evaluation"].name == "held-out"
    assert json.loads(contexts["evaluation"].schema)["mlflow_colspec"]
    # MLflow 3 keeps the logged model as its own entity: find its files through the version
    mv = c.get_model_version("shopsense-sentiment", registered_model["version"])
    import mlflow

    local = mlflow.artifacts.download_artifacts(mv.source)
    listed = os.listdir(local)
    assert "code" in listed and "input_example.json" in listed, listed
    assert os.path.isfile(os.path.join(local, "code", "shopsense", "model", "pyfunc.py"))
    req = open(os.path.join(local, "requirements.txt")).read()
    assert "torch==" in req and "shopsense" not in req


def test_the_model_loads_where_shopsense_is_not_installed(registered_model, tmp_path):
    """A fresh interpreter with the editable install's finder removed: `shopsense` can only
    come from the model's own code_paths."""
    script = textwrap.dedent(f"""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("main")]
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({get_settings().tracking_uri()!r})
        m = mlflow.pyfunc.load_model("models:/shopsense-sentiment/{registered_model['version']}")
        import shopsense
        print(shopsense.__file__)
        out = m.predict(pd.DataFrame({{"text": ["Broke after a day."], "image": [None]}}))
        print(out["label"][0])
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    origin, label = p.stdout.split()[-2:]
    assert "/code/shopsense/" in origin and label in ("negative", "neutral", "positive")
