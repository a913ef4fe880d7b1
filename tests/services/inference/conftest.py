import base64
import io

import pytest
from PIL import Image


def png_b64(color=(200, 40, 40), size=(64, 48)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="session")
def torch_backend(tiny_train_result):
    from services.inference.backends.torch_backend import TorchBackend
    from shopsense.settings import Settings

    return TorchBackend(Settings(), model_uri=str(tiny_train_result.bundle_dir))
