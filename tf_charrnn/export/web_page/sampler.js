// The page's sampling: a seeded random generator and the next-character choice, pure functions of their
// arguments (the same seed and settings give the same text). The model's arithmetic runs in LiteRT.js.

/** A generator of uniform floats in [0, 1) from a 32-bit integer seed (mulberry32). */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The index of the largest logit (the first on ties, as numpy and TensorFlow argmax). */
export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * The probabilities the next character is drawn from: softmax(logits / temperature) over the topK highest
 * logits (0: all; ties with the k-th stay), in float64. Float64Array [V].
 */
export function nextCharProbabilities(logits, temperature = 1, topK = 0) {
  const scaled = Float64Array.from(logits, (logit) => logit / temperature);
  if (topK > 0 && topK < scaled.length) {
    const kthLargest = Float64Array.from(scaled).sort()[scaled.length - topK];
    for (let i = 0; i < scaled.length; i++) if (scaled[i] < kthLargest) scaled[i] = -Infinity;
  }
  const peak = Math.max(...scaled);
  let total = 0;
  for (let i = 0; i < scaled.length; i++) total += scaled[i] = Math.exp(scaled[i] - peak);
  return scaled.map((value) => value / total);
}

/** A draw from `probabilities` with one uniform number `u` in [0, 1). */
export function drawIndex(probabilities, u) {
  let cumulative = 0;
  let last = 0;
  for (let i = 0; i < probabilities.length; i++) {
    if (probabilities[i] === 0) continue;
    cumulative += probabilities[i];
    last = i;
    if (u < cumulative) return i;
  }
  return last; // u beyond a cumulative sum rounded below 1
}

/** The `count` most likely [index, probability] pairs, most likely first. */
export function topEntries(probabilities, count) {
  return Array.from(probabilities, (p, i) => [i, p])
    .sort((a, b) => b[1] - a[1] || a[0] - b[0])
    .slice(0, count);
}
