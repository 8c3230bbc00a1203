"""The explorer's Streamlit-aware package, beside the pages; each room says what it holds.

- `paths`: start-up options (--checkpoint, --data-dir, $VAE_CHECKPOINT), checked once, and where
  checkpoints live.
- `meta`: the one place the UI reads a checkpoint's stored configuration (dataset, binarisation, card).
- `loaders`: every Streamlit cache of the app (cache_resource, cache_data), keyed by plain strings
  and numbers, and the start-up hook.
- `state`: typed accessors for what pages hand each other, and the URL state checked against the
  widget it feeds.
- `figures`: Plotly and Altair figure builders.
- `widgets`: the page frame, checkpoint picker, model card, test-image picker, latent input, pictures.

Importing the package does nothing heavy: no thread starts and torch's settings are left alone until
a page calls `widgets.page`. Pages use `from explorer import loaders, state, figures, widgets`.
"""
