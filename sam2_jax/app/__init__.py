"""The browser annotator of `sam2-jax app`: open a video, click objects, see their masks, propagate, correct,
export; a FastAPI server (`server`) over sessions of the video model (`annotation`) and a static page.
Needs the `app` extra (`pip install 'sam2-jax[app]'`); its command line is `sam2_jax.commands.app`."""
