// The page: loads the LiteRT step model (batch 1) with LiteRT.js, feeds the prime one character at a time
// from a zero state, then draws each next character from the logits and feeds it back, showing the text
// as it comes, the speed, and the most likely next characters; optionally each generated character is
// coloured by one cell's value in the state the step returns after it (h, or tanh of c, as the paper shows
// them). No model arithmetic is written here.

import {Tensor, loadAndCompile, loadLiteRt} from "@litertjs/core";
import {argmax, drawIndex, nextCharProbabilities, seededRandom, topEntries} from "./sampler.js";

const CHART_BARS = 10;
const RENDER_EVERY_MS = 40; // the page repaints (and hears Stop) this often while generating
const VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥"};

const $ = (id) => document.getElementById(id);

/** The LiteRT step model and its vocabulary, stepping one text. */
class CharModel {
  static async load(wasmDir) {
    const [chars] = await Promise.all([
      fetch("vocab.json").then((response) => response.json()).then((vocab) => vocab.chars),
      loadLiteRt(wasmDir),
    ]);
    const model = await loadAndCompile("model.tflite", {accelerator: "wasm"});
    return new CharModel(model.signatures.step ?? model, chars);
  }

  constructor(runner, chars) {
    this.runner = runner;
    this.chars = chars;
    this.ids = new Map(chars.map((char, id) => [char, id]));
    this.stateShape = Array.from(runner.getInputDetails().find((input) => input.name === "states").shape);
    this.stateSize = this.stateShape.reduce((a, b) => a * b, 1);
  }

  /** The ids of `text`'s characters; throws an Error naming those outside the vocabulary. */
  encode(text) {
    const chars = Array.from(text);
    const unknown = [...new Set(chars.filter((char) => !this.ids.has(char)))].sort();
    if (unknown.length) {
      const names = unknown.map((char) => JSON.stringify(char)).join(", ");
      throw new Error(`The prime has characters outside the model's vocabulary: ${names}. Remove them.`);
    }
    if (!chars.length) throw new Error("The prime must hold at least one character.");
    return chars.map((char) => this.ids.get(char));
  }

  /** The offset of (layer, state, cell) in a flat [L, S, 1, H] state (layer from 0; state 0: h, 1: c). */
  stateOffset(layer, state, cell) {
    const [, states, , units] = this.stateShape;
    return (layer * states + state) * units + cell;
  }

  /** The zero state, a LiteRT.js Tensor float32 [L, S, 1, H] (passed on to `step`, which owns it). */
  zeroStates() {
    return new Tensor(new Float32Array(this.stateSize), this.stateShape);
  }

  /**
   * One step: {logits: Float32Array [V], states: Tensor [L, S, 1, H]}. Takes (and deletes) `states`: the
   * state stays in LiteRT.js's memory from step to step, only the logits are copied out.
   */
  async step(id, states) {
    const ids = new Tensor(new Int32Array([id]), [1]);
    try {
      const outputs = await this.runner.run({ids, states});
      const logits = outputs.logits.toTypedArray().slice();
      outputs.logits.delete();
      return {logits, states: outputs.states};
    } finally {
      ids.delete();
      states.delete();
    }
  }
}

function readSettings() {
  const form = $("controls");
  return {
    prime: form.prime.value,
    greedy: form.mode.value === "greedy",
    temperature: Number(form.temperature.value),
    topK: Number(form.top_k.value),
    length: Number(form.length.value),
    seed: Number(form.seed.value),
    colour: form.colour.checked,
    colourLayer: Number(form.colour_layer.value) - 1, // the menu counts layers from 1, as their names do
    colourState: form.colour_state.value === "c" ? 1 : 0,
    colourCell: Number(form.colour_cell.value),
  };
}

/** A cell's value as a background: red positive, blue negative, stronger further from 0 (c through tanh). */
function cellColour(value, isCellState) {
  const v = isCellState ? Math.tanh(value) : Math.max(-1, Math.min(1, value));
  const alpha = Math.abs(v).toFixed(3);
  return v >= 0 ? `rgba(220, 40, 30, ${alpha})` : `rgba(30, 90, 220, ${alpha})`;
}

/** A span holding one generated character, coloured by `value` (kept in data-value). */
function colouredChar(char, value, isCellState) {
  const span = document.createElement("span");
  span.textContent = char;
  span.dataset.value = String(value);
  span.style.backgroundColor = cellColour(value, isCellState);
  return span;
}

function showChart(probabilities, chars) {
  const rows = topEntries(probabilities, CHART_BARS).map(([id, probability]) => {
    const row = document.createElement("li");
    row.dataset.char = chars[id];
    row.dataset.probability = String(probability);
    const label = document.createElement("span");
    label.className = "char";
    label.textContent = VISIBLE[chars[id]] ?? chars[id];
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.setProperty("--share", probability.toFixed(4));
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * probability).toFixed(1)}%`;
    row.append(label, bar, value);
    return row;
  });
  $("chart").replaceChildren(...rows);
}

function showSpeed(generated, seconds) {
  const rate = seconds > 0 ? generated / seconds : 0;
  const speed = $("speed");
  speed.dataset.charsPerSecond = String(rate);
  speed.dataset.generated = String(generated);
  speed.textContent = `${generated} characters · ${Math.round(rate).toLocaleString("en")} chars/s`;
}

function setState(state, message) {
  document.body.dataset.state = state;
  $("generate").disabled = state === "loading" || state === "running";
  $("stop").disabled = state !== "running";
  if (message !== undefined) $("status").textContent = message;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

let model;
let stopRequested = false;

async function generate(settings) {
  let ids;
  try {
    ids = model.encode(settings.prime);
  } catch (error) {
    showError(error.message);
    setState("ready", "Not generated: the prime needs changing.");
    $("prime").focus();
    return;
  }
  showError("");
  stopRequested = false;
  setState("running", "Generating…");
  const text = document.createTextNode(settings.prime);
  $("output").replaceChildren(text);
  const offset = model.stateOffset(settings.colourLayer, settings.colourState, settings.colourCell);
  document.body.dataset.colouring = settings.colour ? "on" : "off";
  const chooseFrom = (logits) =>
    settings.greedy
      ? nextCharProbabilities(logits)
      : nextCharProbabilities(logits, settings.temperature, settings.topK);
  const random = seededRandom(settings.seed);
  const start = performance.now();
  let states = model.zeroStates();
  let logits;
  let generated = 0;
  try {
    for (const id of ids) ({logits, states} = await model.step(id, states));
    let lastRender = start;
    while (generated < settings.length && !stopRequested) {
      const id = settings.greedy ? argmax(logits) : drawIndex(chooseFrom(logits), random());
      if (!settings.colour) text.appendData(model.chars[id]);
      generated++;
      ({logits, states} = await model.step(id, states));
      if (settings.colour) {
        // The state after reading the character: what the inspection colours it by.
        const value = states.toTypedArray()[offset];
        $("output").append(colouredChar(model.chars[id], value, settings.colourState === 1));
      }
      if (performance.now() - lastRender >= RENDER_EVERY_MS) {
        showChart(chooseFrom(logits), model.chars);
        showSpeed(generated, (performance.now() - start) / 1000);
        await nextFrame(); // paints, and lets a click on Stop in
        lastRender = performance.now();
      }
    }
    states.delete();
  } catch (error) {
    showError(`Generation failed after ${generated} characters: ${error.message}`);
    setState("ready", "");
    return;
  }
  showSpeed(generated, (performance.now() - start) / 1000);
  showChart(chooseFrom(logits), model.chars);
  const stopped = generated < settings.length;
  setState(stopped ? "stopped" : "done", `${stopped ? "Stopped" : "Done"}: ${$("speed").textContent}.`);
}

async function main() {
  const form = $("controls");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (document.body.dataset.state !== "running" && model) generate(readSettings());
  });
  form.mode.forEach((radio) =>
    radio.addEventListener("change", () => {
      const greedy = form.mode.value === "greedy";
      for (const name of ["temperature", "top_k", "seed"]) form[name].disabled = greedy;
    }),
  );
  $("prime").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  $("stop").addEventListener("click", () => (stopRequested = true));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") stopRequested = true;
  });
  setState("loading", "Loading the model…");
  try {
    model = await CharModel.load(document.body.dataset.litertWasm);
  } catch (error) {
    showError(`The model could not be loaded: ${error.message}`);
    setState("error", "");
    return;
  }
  $("model").textContent = `${model.chars.length} characters · state ${model.stateShape.join("×")}`;
  const [layers, states, , units] = model.stateShape;
  const option = (value, label) =>
    Object.assign(document.createElement("option"), {value, textContent: label});
  const layerNumbers = Array.from({length: layers}, (_, i) => String(i + 1));
  form.colour_layer.replaceChildren(...layerNumbers.map((number) => option(number, number)));
  const stateNames = states === 2 ? ["h", "c"] : ["h"];
  form.colour_state.replaceChildren(...stateNames.map((name) => option(name, name)));
  form.colour_state.value = stateNames[stateNames.length - 1];
  form.colour_cell.max = String(units - 1);
  setState("ready", "Ready: press Generate (or Ctrl+Enter in the prime).");
}

main();
