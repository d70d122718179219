"""`merclip bench`, one module per part, all taking one options record (``options.BenchOptions``):

- ``stages``: per-stage latency of each runtime (default, onnxruntime fp32, torch eager, OpenVINO bf16, int8),
  their ratios, agreement, and the model's throughput batched;
- ``speech``: the speech paths' accuracy (WER) and word-to-screen delay, on the sample clip or any recording;
- ``end_to_end``: `merclip-live` itself on the sample clip at real-time pace, in a fresh process;
- ``soak``: a long stream as fast as possible, latency, memory and words per tenth of the run;
- ``streams``: many client sessions against one `merclip serve` (``--server``);
- ``run``: one stream's bench, every part in order; ``report``: the printed report; ``cli``: the flags.

CLIP models are random-weight instances of the real architectures (timing does not depend on the
weights); Whisper is the real tiny.en the monitor runs by default, so its words can be scored. Every ratio
is measured side by side in one run, because this machine is shared and noisy. It lives in ``train/``
because it needs torch (eager comparison, export) and drives the live pipeline as a client; ``stream/``
stays torch-free.
"""
