"""benchmarks/distill.py without the LLM or training: the rank-by-rank order of the texts to
label and the tables of a saved run."""

from benchmarks.distill import _by_rank, print_tables


def test_texts_are_labelled_rank_by_rank_across_sets():
    rows = [{"set": "a", "text": "a1"}, {"set": "a", "text": "a2"}, {"set": "a", "text": "a3"},
            {"set": "b", "text": "b1"}]
    # a prefix of the order covers a smaller per-set cap of every set whole
    assert _by_rank(rows) == ["a1", "b1", "a2", "a3"]


def test_the_tables_say_where_the_target_is_met_and_missed(capsys):
    score = {"n": 10, "accuracy": 0.9, "macro_f1": 0.9}
    res = {"train_sets": ["x"], "per_set": 5, "train_texts": 5, "labelling_minutes": 1.0,
           "labelling": {"train": {"teacher": "t@1", "labelled": 5}, "eval": {"labelled": 20}},
           "teacher": {"dvd": score, "imdb": score},
           "seeds": [{"seed": 0, "compact": {}, "distilled": {},
                      "scores": {"dvd": {"compact": {**score, "accuracy": 0.8},
                                         "distilled": {**score, "accuracy": 0.89}},
                                 "imdb": {"compact": {**score, "accuracy": 0.8},
                                          "distilled": {**score, "accuracy": 0.85}}}}]}
    print_tables(res)
    out = capsys.readouterr().out
    assert "| | distilled | 10 | 0.8900 |" in out and "-1.0 points" in out
    assert "dvd: distilled within 2 points of the teacher: 1.0 points below it -> met" in out
    assert "imdb: distilled within 2 points of the teacher: 5.0 points below it -> MISSED" in out
