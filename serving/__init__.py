"""Online serving: the feed, item-to-item, content search and event ingestion behind one FastAPI app.

Data flows `feature_store -> recsys -> training -> serving`: this package only reads a run
directory (`recsys.artifact.load_run`) and the online store (`feature_store.online`); it never
trains. Entry point: `recsys serve --run RUN_DIR` (see `serving.main.create_app`).
"""
