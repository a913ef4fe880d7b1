"""Distillation: the compact model learns the teacher's distributions from the cache."""

import numpy as np

from shopsense.llm.labeller import TeacherLabels, teacher_key
from shopsense.model.classifier import Predictor, SentimentModel
from shopsense.model.train import TrainConfig, load_labelled, train
from shopsense.settings import get_settings
from shopsense.store import open_store


def _fill(teacher, texts, flip):
    s = get_settings()
    cache = TeacherLabels(open_store(s.default_store_uri(), s), teacher)
    for text, label in texts:
        p = np.array([0.02, 0.02, 0.96]) if (label == "negative") == flip else \
            np.array([0.96, 0.02, 0.02])
        cache.add(teacher_key(text, s.llm.label_max_chars), p, mass=1.0, text=text)
    cache.compact()


def test_a_teacher_that_inverts_labels_is_what_the_student_learns(home, data_dir, tmp_path):
    rows = load_labelled(["uci-amazon"], data_dir, 48, 13)
    # the teacher says the opposite of the human label for every text; with distill_weight 1
    # only the teacher counts, so the student must learn the inversion
    _fill("inverting-teacher@test", [(r["text"], r["label"]) for r in rows], flip=True)
    cfg = TrainConfig(data_dir=data_dir, output_dir=tmp_path / "b", train_sets=["uci-amazon"],
                      eval_sets=["uci-amazon"], max_train_per_set=48, max_eval_per_set=48,
                      epochs=6, batch_size=16, max_length=32, image_pool=6, progress=False,
                      p_image_only=0.0, p_text_only=1.0, lr_lora=2e-3, lr_head=5e-3,
                      teacher="inverting-teacher@test", distill_weight=1.0)
    res = train(cfg)
    assert res.metrics["teacher_teacher_labelled"] == 48
    pred = Predictor(SentimentModel.load_bundle(res.bundle_dir))
    p = pred.predict_proba([r["text"] for r in rows], [None] * len(rows))
    said_positive = p[:, 2] > p[:, 0]
    truly_positive = np.array([r["label"] == "positive" for r in rows])
    assert (said_positive != truly_positive).mean() > 0.75


def test_unlabelled_texts_learn_from_the_teacher_only(home, data_dir, tmp_path):
    from shopsense.model.train import TrainSession

    rows = load_labelled(["uci-imdb"], data_dir, 20, 13)
    _fill("plain-teacher@test", [(r["text"], r["label"]) for r in rows[:12]], flip=False)
    cfg = TrainConfig(data_dir=data_dir, output_dir=tmp_path / "b", train_sets=["uci-amazon"],
                      eval_sets=[], max_train_per_set=16, epochs=1, batch_size=8,
                      max_length=32, image_pool=6, progress=False, teacher="plain-teacher@test",
                      unlabelled_sets=["uci-imdb"])
    session = TrainSession(cfg)
    assert session.teacher_counts["teacher_only_rows"] == 12
    assert session.teacher_counts["unlabelled_without_teacher"] == 1000 - 12
    teacher_only = [r for r in session.train_rows if not r["hard"]]
    assert len(teacher_only) == 12 and all(r["text"] in session.soft for r in teacher_only)
    loss = session.loss(session.next_batch())
    assert loss.requires_grad and float(loss) > 0
