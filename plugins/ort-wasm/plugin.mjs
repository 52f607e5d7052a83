#!/usr/bin/env node
// The reference bayesnas device plug-in: ONNX Runtime's WebAssembly backend
// (onnxruntime-web) under Node, a device of its own next to the native ONNX
// Runtime built into bayesnas. It speaks the protocol bayesnas.device/v1 of
// PLUGINS.md: one JSON request per line on stdin, one JSON answer per line
// on stdout, anything else on stderr.
//
//   node plugins/ort-wasm/plugin.mjs [--threads N]
//
// onnxruntime-web is loaded from $BAYESNAS_ORTWEB_DIR, or from the cache
// directory scripts/ortweb.sh fills (the directory it prints).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

const PROTOCOL = 'bayesnas.device/v1';
const ORT_VERSION = '1.24.1';

// stdout carries protocol lines only. Everything else that would print there
// (console.log in this file, the runtime's own logging) goes to stderr.
const writeLine = (() => {
  const write = process.stdout.write.bind(process.stdout);
  return (obj) => write(JSON.stringify(obj) + '\n');
})();
process.stdout.write = process.stderr.write.bind(process.stderr);
for (const level of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[level] = console.error.bind(console);
}

function die(msg) {
  process.stderr.write(`ort-wasm plug-in: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  let threads = 1;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    let v;
    if (a === '--threads') v = argv[++i];
    else if (a.startsWith('--threads=')) v = a.slice('--threads='.length);
    else die(`unknown argument ${JSON.stringify(a)}; usage: plugin.mjs [--threads N]`);
    threads = Number(v);
    if (!Number.isInteger(threads) || threads < 1) die(`--threads ${JSON.stringify(v)}: want an integer >= 1`);
  }
  return { threads };
}

function ortDir() {
  if (process.env.BAYESNAS_ORTWEB_DIR) return process.env.BAYESNAS_ORTWEB_DIR;
  const cache = process.env.BAYESNAS_CACHE ||
    path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'bayesnas');
  return path.join(cache, `onnxruntime-web-${ORT_VERSION}`);
}

const { threads } = parseArgs(process.argv.slice(2));
const dir = ortDir();
// The Node build of onnxruntime-web; it loads ort-wasm-simd-threaded.{mjs,wasm}
// next to itself and imports onnxruntime-common from dir/node_modules.
const entry = path.join(dir, 'node_modules', 'onnxruntime-web', 'dist', 'ort.node.min.mjs');
if (!fs.existsSync(entry)) {
  die(`onnxruntime-web ${ORT_VERSION} not found (no ${entry}): run scripts/ortweb.sh, ` +
    'or set BAYESNAS_ORTWEB_DIR to the directory it prints');
}
const ort = await import(pathToFileURL(entry).href);
ort.env.wasm.numThreads = threads;

function describe() {
  let cpu = '';
  try {
    const m = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m);
    if (m) cpu = m[1].trim();
  } catch { /* not Linux */ }
  const cpus = os.cpus();
  if (!cpu && cpus.length > 0) cpu = cpus[0].model.trim();
  const device = { name: os.hostname() || 'this machine', cpu, cores: cpus.length };
  try {
    device.governor = fs.readFileSync('/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor', 'utf8').trim();
  } catch { /* no cpufreq here: left out */ }
  return {
    device,
    runtime: {
      name: 'onnxruntime-web',
      version: ort.env.versions?.web || ORT_VERSION,
      execution_provider: 'wasm',
      intra_op_threads: threads,
      inter_op_threads: 1,
      graph_optimization: 'all',
    },
  };
}

// An error answered to one request; the plug-in goes on.
class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// Each time request loads its model afresh and releases it after: bayesnas
// may write different models to the same path in turn (the protocol times
// "this file now"), and a measurement loads thousands of models.
async function session(model) {
  let bytes;
  try {
    bytes = fs.readFileSync(model);
  } catch (e) {
    throw new RequestError('model', `cannot read ${model}: ${e.message}`);
  }
  try {
    return await ort.InferenceSession.create(bytes, {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    throw new RequestError('model', `cannot load ${model}: ${e.message}`);
  }
}

// feeds is one random input batch for the model's single float32 input,
// its first (batch) dimension set to batch.
function feeds(s, model, batch) {
  if (s.inputNames.length !== 1) {
    throw new RequestError('model', `${model} has ${s.inputNames.length} inputs; this plug-in fills a single float32 input`);
  }
  const meta = s.inputMetadata?.[0];
  if (!meta || !meta.isTensor || meta.type !== 'float32') {
    throw new RequestError('model', `${model}: input ${s.inputNames[0]} is not a float32 tensor`);
  }
  const dims = meta.shape.map((d, i) => {
    if (i === 0) {
      if (typeof d === 'number' && d !== batch) {
        throw new RequestError('model', `${model}: batch dimension is fixed at ${d}, ${batch} was asked for`);
      }
      return batch;
    }
    if (typeof d !== 'number' || d < 1) {
      throw new RequestError('model', `${model}: input dimension ${i} is ${JSON.stringify(d)}, not a fixed size`);
    }
    return d;
  });
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.random();
  return { [s.inputNames[0]]: new ort.Tensor('float32', data, dims) };
}

// nearestRank is the q-quantile of sorted values by the nearest-rank method
// (the smallest value with at least q of the values at or below it), as
// bayesnas's own timing does: median = nearestRank(0.5), p90 = nearestRank(0.9).
function nearestRank(sorted, q) {
  const k = Math.ceil(q * sorted.length) - 1;
  return sorted[Math.max(0, Math.min(k, sorted.length - 1))];
}

function intParam(params, name, min) {
  const v = params?.[name];
  if (!Number.isInteger(v) || v < min) {
    throw new RequestError('bad_request', `params.${name} is ${JSON.stringify(v)}; want an integer >= ${min}`);
  }
  return v;
}

async function time(params) {
  const model = params?.model;
  if (typeof model !== 'string' || !path.isAbsolute(model)) {
    throw new RequestError('bad_request', `params.model is ${JSON.stringify(model)}; want an absolute path`);
  }
  const batch = intParam(params, 'batch', 1);
  const warmup = intParam(params, 'warmup', 0);
  const repeats = intParam(params, 'repeats', 1);
  const s = await session(model);
  try {
    const f = feeds(s, model, batch);
    for (let i = 0; i < warmup; i++) await s.run(f);
    const ms = new Array(repeats);
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now();
      await s.run(f);
      ms[i] = performance.now() - t0;
    }
    ms.sort((a, b) => a - b);
    return { median_ms: nearestRank(ms, 0.5), p90_ms: nearestRank(ms, 0.9), repeats };
  } catch (e) {
    if (e instanceof RequestError) throw e;
    throw new RequestError('model', `running ${model}: ${e.message}`);
  } finally {
    await s.release();
  }
}

async function handle(req) {
  switch (req.method) {
    case 'describe':
      return describe();
    case 'time':
      return time(req.params);
    default: // predict included: this device has no latency model of its own
      throw new RequestError('unsupported', `method ${JSON.stringify(req.method)} is not implemented by the ort-wasm plug-in`);
  }
}

// One request at a time, in order; the end of stdin ends the plug-in.
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (line.trim() === '') continue;
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    writeLine({ protocol: PROTOCOL, id: null, error: { code: 'bad_request', message: `not JSON: ${e.message}` } });
    continue;
  }
  const id = req?.id ?? null;
  if (req?.protocol !== PROTOCOL) {
    writeLine({ protocol: PROTOCOL, id, error: { code: 'protocol', message: `this plug-in speaks ${PROTOCOL}, not ${JSON.stringify(req?.protocol)}` } });
    continue;
  }
  try {
    writeLine({ protocol: PROTOCOL, id, result: await handle(req) });
  } catch (e) {
    const code = e instanceof RequestError ? e.code : 'internal';
    if (!(e instanceof RequestError)) process.stderr.write(`ort-wasm plug-in: ${e.stack || e}\n`);
    writeLine({ protocol: PROTOCOL, id, error: { code, message: e.message || String(e) } });
  }
}
process.exit(0);
