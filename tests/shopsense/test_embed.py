"""Text and image embedders (real offline weights; a handful of inputs)."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def text():
    from shopsense.embed import text_embedder

    return text_embedder(128, 32)  # the process-wide instance the retrieval tests use too


def test_text_embeddings_shape_norm_and_order(text):
    texts = ["The battery died after two days.", "Battery life is poor; it died quickly.",
             "A charming film with a wonderful cast.", ""]
    vecs = text.embed(texts)
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, atol=1e-5)
    # batching (and the length sort inside it) does not change a text's vector or its place
    for i, t in enumerate(texts[:3]):
        assert np.allclose(text.embed_one(t), vecs[i], atol=1e-5)
    sims = vecs[:3] @ vecs[:3].T
    assert sims[0, 1] > 0.6 > sims[0, 2]
    assert text.embed([]).shape == (0, 384)


def test_text_embeddings_match_sentence_transformers(text):
    """Same recipe as sentence-transformers' all-MiniLM-L6-v2 (mean pooling + normalise)."""
    from sentence_transformers import SentenceTransformer

    from shopsense.model.encoders import minilm_dir

    texts = ["Arrived cracked, sending it back.", "Great value for the price."]
    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    st.max_seq_length = 128
    ref = st.encode(texts, normalize_embeddings=True)
    assert np.allclose(text.embed(texts), ref, atol=1e-4)


def test_text_embedder_arguments_are_checked():
    from shopsense.embed import TextEmbedder

    with pytest.raises(ValueError):
        TextEmbedder(max_length=4)
    with pytest.raises(ValueError):
        TextEmbedder(batch_size=0)


def test_image_embeddings():
    from shopsense.embed import ImageEmbedder, image_embedder
    from shopsense.images import PhotoSpec, render_photo

    emb = image_embedder()
    assert image_embedder() is emb and isinstance(emb, ImageEmbedder)
    a = render_photo(PhotoSpec(category="phone", damage="cracked"), seed=1, size=(128, 128))
    b = render_photo(PhotoSpec(category="mug"), seed=2, size=(300, 200))
    vecs = emb.embed([a, b, a])
    assert vecs.shape == (3, 1280) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vecs[0], vecs[2], atol=1e-5) and not np.allclose(vecs[0], vecs[1])
    assert emb.embed([]).shape == (0, 1280)


def test_dimensions_agree_with_the_dense_index():
    from services.retrieval.dense import IMAGE_DIM, TEXT_DIM, VECTORS
    from shopsense.model import encoders

    assert (TEXT_DIM, IMAGE_DIM) == (encoders.TEXT_DIM, encoders.IMAGE_DIM)
    assert VECTORS == {"text": 384, "image": 1280}
