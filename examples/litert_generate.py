"""Generates text from a tf_charrnn LiteRT export with numpy and ai-edge-litert alone (no TensorFlow):

    python scripts/export.py --train_dir=runs/shakespeare_cpu --format=litert --quantize=int8 \\
        --export_dir=/tmp/charrnn_litert
    pip install ai-edge-litert numpy       # all this script needs, on any machine
    python examples/litert_generate.py --model_dir=/tmp/charrnn_litert --prime="ROMEO:" --length=300 \\
        --temperature=0.8 --top_k=20 --seed=7

The export folder holds model.tflite, whose one signature `step` maps ids int32 [B] and states float32
[L, S, B, H] to logits float32 [B, V] for the next character and the new states, and vocab.json
({"chars": [...]}, the characters in id order). Generation feeds the prime one character at a time from a
zero state, then draws each next character from the logits and feeds it back. The text goes to stdout as
it is generated; the speed to stderr.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class CharModel:
    """A LiteRT Char-RNN step model and its vocabulary, stepping one text (batch 1).

    Args:
      model_dir: a folder holding model.tflite and vocab.json.
      num_threads: interpreter threads; None: LiteRT's default.
    """

    def __init__(self, model_dir, num_threads=None):
        with open(os.path.join(model_dir, "vocab.json"), encoding="utf-8") as f:
            self.chars = json.load(f)["chars"]
        self.char_ids = {char: index for index, char in enumerate(self.chars)}
        interpreter = Interpreter(model_path=os.path.join(model_dir, "model.tflite"), num_threads=num_threads)
        self._step = interpreter.get_signature_runner("step")
        shape = list(self._step.get_input_details()["states"]["shape_signature"])
        shape[2] = 1  # batch 1; the model takes any batch
        self.zero_states = np.zeros(shape, np.float32)

    def step(self, char_id, states):
        """Advances by one character: (logits float32 [V], new states float32 [L, S, 1, H])."""
        out = self._step(ids=np.array([char_id], np.int32), states=states)
        return out["logits"][0], out["states"]

    def encode(self, text):
        """The ids of `text`'s characters; ValueError names those outside the vocabulary."""
        unknown = sorted(set(text) - set(self.char_ids))
        if unknown:
            raise ValueError(f"characters outside the vocabulary: {unknown}")
        return [self.char_ids[char] for char in text]

    def generate(self, prime, length, rng, greedy=False, temperature=1.0, top_k=0):
        """An iterator over `length` characters that follow `prime` (one or more characters, all in the
        vocabulary: checked here, before the first step)."""
        prime_ids = self.encode(prime)
        if not prime_ids:
            raise ValueError("the prime must hold at least one character")
        return self._characters(prime_ids, length, rng, greedy, temperature, top_k)

    def _characters(self, prime_ids, length, rng, greedy, temperature, top_k):
        states = self.zero_states
        for char_id in prime_ids:
            logits, states = self.step(char_id, states)
        for _ in range(length):
            char_id = choose_next(logits, rng, greedy, temperature, top_k)
            yield self.chars[char_id]
            logits, states = self.step(char_id, states)


def choose_next(logits, rng, greedy=False, temperature=1.0, top_k=0):
    """The next id from logits float [V]: the argmax, or a draw from softmax(logits / temperature) over
    the top_k highest (0: all; ties with the k-th stay)."""
    if greedy:
        return int(np.argmax(logits))
    logits = logits.astype(np.float64) / temperature
    if 0 < top_k < len(logits):
        kth_largest = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < kth_largest, -np.inf, logits)
    probabilities = np.exp(logits - logits.max())
    return int(rng.choice(len(logits), p=probabilities / probabilities.sum()))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, help="folder holding model.tflite and vocab.json")
    parser.add_argument("--prime", default="\n", help="text that sets the state before generating")
    parser.add_argument("--length", type=int, default=500, help="characters to generate")
    parser.add_argument("--sampling", choices=["sample", "greedy"], default="sample", help="greedy: argmax")
    parser.add_argument("--temperature", type=float, default=1.0, help="divide logits by this (> 0)")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k most likely; 0: all")
    parser.add_argument("--seed", type=int, default=0, help="numpy seed of the draws")
    parser.add_argument("--num_threads", type=int, default=None, help="LiteRT threads; default: LiteRT's")
    args = parser.parse_args()
    if args.temperature <= 0 or args.top_k < 0 or args.length < 0:
        parser.error("--temperature must be > 0, --top_k and --length >= 0")
    model = CharModel(args.model_dir, args.num_threads)
    start = time.perf_counter()
    try:
        characters = model.generate(
            args.prime,
            args.length,
            np.random.default_rng(args.seed),
            greedy=args.sampling == "greedy",
            temperature=args.temperature,
            top_k=args.top_k,
        )
    except ValueError as error:
        sys.exit(f"error: --prime: {error}")
    sys.stdout.write(args.prime)
    for char in characters:
        sys.stdout.write(char)
        sys.stdout.flush()
    seconds = time.perf_counter() - start
    sys.stdout.write("\n")
    rate = args.length / seconds if seconds > 0 else float("inf")
    print(f"{args.length} characters in {seconds:.2f} s: {rate:,.0f} chars/s (batch 1)", file=sys.stderr)


if __name__ == "__main__":
    main()
