"""Which encoder backend earns its place on this CPU: torch fp32 and bf16 beside ONNX Runtime
fp32 (BERT fusions) and dynamically quantized int8, on the same chunks, with each one's lowest
cosine to torch fp32 (the bar for a backend: >= 0.99 on every chunk).

    pip install onnxruntime onnx onnxscript   # not dependencies of Olympus
    python -m bench.encoders [--data ../shared/data/scifact] [--docs 1000] [--rounds 2]

The first ``--docs`` documents (title and text) are cut by the embedder's own chunker; every arm
runs on two intra-op threads, batches of 16 sorted by token count, rounds interleaved, best
round. The ONNX graph is exported from the packaged weights once into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.ingest import cpu_flags
from olympus.evaluation import load_beir

RESULTS = Path(__file__).parent / "results"
THREADS = 2
BATCH = 16


def _export(model, folder: Path) -> dict[str, Path]:
    """fp32 ONNX with ONNX Runtime's BERT fusions, and two int8 quantizations of it."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    class Hidden(torch.nn.Module):  # keyword arguments: BertModel's positional order moved
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state

    sample = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    torch.onnx.export(
        Hidden().eval(),
        (sample, sample),
        folder / "model.onnx",
        input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
        opset_version=17,
        dynamo=False,
    )
    config = model.config
    fused = optimize_model(
        str(folder / "model.onnx"),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    fused.save_model_to_file(str(folder / "fp32.onnx"))
    paths = {"onnx fp32": folder / "fp32.onnx"}
    for name, weight, per_channel in (
        ("onnx int8 (s8, per channel)", QuantType.QInt8, True),
        ("onnx int8 (u8)", QuantType.QUInt8, False),
    ):
        path = folder / f"{weight.name}-{per_channel}.onnx"
        quantize_dynamic(
            folder / "fp32.onnx",
            path,
            weight_type=weight,
            per_channel=per_channel,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        paths[name] = path
    return paths


def _onnx_arm(path: Path) -> Callable[[Sequence[Sequence[int]]], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: Sequence[Sequence[int]]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        hidden = session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return run


def run(data: Path, docs: int, rounds: int) -> list[dict]:
    import torch

    from workers.embedder.batching import length_batches
    from workers.embedder.chunking import Chunker
    from workers.embedder.encoder import Encoder

    torch.set_num_threads(THREADS)
    fp32, bf16 = Encoder(dtype="float32"), Encoder(dtype="bfloat16")
    chunker = Chunker(fp32.tokenizer, fp32.max_length, 32)
    corpus = load_beir(data, max_docs=docs).corpus
    texts = [c for doc in corpus.values() for c in chunker.split(doc)]
    tokens = fp32.tokenize(texts)
    batches = length_batches([len(t) for t in tokens], BATCH)
    with tempfile.TemporaryDirectory(prefix="olympus-onnx-") as folder:
        arms = {"torch fp32": fp32.embed_tokens, "torch bf16": bf16.embed_tokens}
        arms |= {name: _onnx_arm(path) for name, path in _export(fp32.model, Path(folder)).items()}
        rates: dict[str, list[float]] = {name: [] for name in arms}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(rounds):
            for name, embed in arms.items():
                out = np.zeros((len(texts), fp32.dims), dtype=np.float32)
                started = time.perf_counter()
                for idx in batches:
                    out[idx] = embed([tokens[i] for i in idx])
                rates[name].append(len(texts) / (time.perf_counter() - started))
                vectors[name] = out
    reference = vectors["torch fp32"]
    return [
        {
            "arm": name,
            "chunks": len(texts),
            "chunks_per_s": max(rates[name]),
            "rounds_chunks_per_s": rates[name],
            "vs_torch_fp32": max(rates[name]) / max(rates["torch fp32"]),
            "vs_torch_bf16": max(rates[name]) / max(rates["torch bf16"]),
            "cosine_min": float((vectors[name] * reference).sum(1).min()),
        }
        for name in arms
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = run(args.data, args.docs, args.rounds)
    print(f"\n{cpu_flags()}, {rows[0]['chunks']} chunks")
    print(f"{'arm':<30}{'chunks/s':>10}{'x fp32':>8}{'x bf16':>8}{'cosine min':>12}")
    for row in rows:
        print(
            f"{row['arm']:<30}{row['chunks_per_s']:>10.1f}{row['vs_torch_fp32']:>8.2f}"
            f"{row['vs_torch_bf16']:>8.2f}{row['cosine_min']:>12.4f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"cpu": cpu_flags(), "docs": args.docs, "rows": rows}
    (RESULTS / "encoders.json").write_text(json.dumps(out, indent=2))
    print(f"written {RESULTS / 'encoders.json'}")


if __name__ == "__main__":
    main()
