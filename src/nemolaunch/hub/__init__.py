"""The Hugging Face Hub transfer: what a repository holds, and a quant's files brought onto this disk.

Adapters like the rest (I/O for the pure core, never printing), kept together because they are one
subsystem. A download flows through them in this order:

1. :mod:`listing` — one listing of the repository (paths, sizes, LFS sha256s, the commit), from the
   Hub or else from the local HF cache; :mod:`api` builds the Hub's URLs and turns its client's errors
   into nemolaunch's one-line errors.
2. :mod:`download` — ``download_quant``: the quant's files chosen from the listing, free disk checked,
   the plan of what is left to fetch (``nemolaunch.core.download_plan``).
3. :mod:`transfer` — each file on worker threads: a verified record is trusted, else the file is fetched
   under huggingface_hub's own lock for it.
4. :mod:`segmented_fetch` — one file over several ranged connections: :mod:`piece_runs` cuts it into
   pieces and runs, :mod:`range_source` resolves the Hub's redirect once and reads the CDN's ranges,
   :mod:`connection_budget` bounds the connections of the whole run, :mod:`partial_state` records in a
   sidecar which bytes are on disk (a kill loses only what was in flight), and :mod:`prefix_hash`
   hashes the written prefix as it grows.
5. :mod:`verify` — the sha256 checked against the listing and remembered; the GGUF split headers checked.
6. :mod:`layout` — the finished file put where huggingface_hub (or ``hf download --local-dir``) keeps
   it, so llama.cpp's ``-hf`` and ``hf download`` find it too.

Beside the download, :mod:`remote_header` reads a quant's GGUF header from the Hub with one Range
request, so a plan knows the model's architecture before any weight is downloaded.
"""
