"""Results and models inside the Airflow UI: a FastAPI app (``music_recsys.ui.app.create_app``) that the
plugin in ``plugins/music_recsys_plugin.py`` mounts at ``/recsys``. The optional human approval of a
promotion is a pipeline stage (``music_recsys.pipeline.approval``)."""
