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


@pytest.fixture(scope="module")
def indexed(data_dir, tmp_path_factory):
    """A real HybridRetriever (Qdrant local mode + tantivy) over 40 real reviews, and them."""
    from services.retrieval.retriever import HybridRetriever
    from services.retrieval.settings import RetrievalSettings

    from shopsense.data.loaders import load_set
    from shopsense.embed import text_embedder

    el = load_set("blitzer-electronics", data_dir)
    dvd = load_set("blitzer-dvd", data_dir)
    reviews = el[:15] + el[-15:] + dvd[:10]
    r = HybridRetriever.open(
        RetrievalSettings(qdrant_url=None, opensearch_url=None, text_max_length=128),
        index_dir=tmp_path_factory.mktemp("api-index"), text_embedder=text_embedder(128, 32))
    r.index(reviews)
    yield r, reviews
    r.close()
