"""Results and models inside the Airflow UI: a FastAPI app (``music_recsys.ui.app.create_app``) that the
plugin in ``plugins/music_recsys_plugin.py`` mounts at ``/recsys``, and the optional human approval of a
promotion (``music_recsys.ui.approval``)."""
