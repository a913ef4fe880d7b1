"""What evaluates and trains retrieval, apart from what serves it: nothing in
``services/retrieval/`` outside this package imports it (the CLI's offline commands import it
when they run).

* :mod:`~services.retrieval.offline.beir`: BEIR collections, trec_eval's measures through
  ir-measures, every mode with and without the reranker, paired significance tests;
* :mod:`~services.retrieval.offline.review_sets`: review-retrieval collections from Blitzer
  metadata, in BEIR layout;
* :mod:`~services.retrieval.offline.querygen`: shopper queries written by the local LLM for
  reviews (InPars / Promptagator style), filtered by the first-stage retrievers, cached as a
  dataset keyed by review and generator;
* :mod:`~services.retrieval.offline.train_rerank`: training groups (LLM queries with hard
  negatives mined from the hybrid results, or the heuristic pairs), training of the
  cross-encoder, calibration of its mixing weight.
"""
