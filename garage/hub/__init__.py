"""Publishing a run: push to the Hugging Face Hub, or download in the browser.

    auth.py         whose token pushes (Spaces OAuth, HF_TOKEN, a saved login), scrubbing it from text
    names.py        default and validated repo names
    export.py       the adapter, the merged 16-bit model and GGUF files of a run, staged on disk
    gguf_export.py  GGUF (f16 / q8_0) for Gemma 3 text models with the ``gguf`` package
    card.py         the model card and the dataset card
    examples.py     base and tuned answers to a few rows of the run's dataset, for the card
    png.py          a small loss-curve PNG without matplotlib
    push.py         create the repo and upload a folder with ``HfApi``, with retries
    zips.py         files for the browser: adapter zip, merged model zip, dataset JSONL
    publish.py      the calls the UI, the API and the CLI make

Heavy libraries (torch, transformers, peft, huggingface_hub, gguf) load inside functions.
"""
